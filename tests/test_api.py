"""The notebook API: the README's snippet runs as written; fit/create compose."""
import json
import os
import re
import subprocess
import sys

import jax
import numpy as np
import pytest

from mnist_jax import api
from mnist_jax.data import idx
from mnist_jax.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def readme_snippet() -> str:
  """The first ```python block of README.md that uses ``mnist_jax.api``."""
  for path in (os.path.join(ROOT, 'README.md'),):
    if os.path.exists(path):
      with open(path) as f:
        blocks = re.findall(r'```python\n(.*?)```', f.read(), re.S)
      found = [b for b in blocks if 'from mnist_jax import api' in b]
      if found:
        return found[0]
  pytest.fail('README.md has no ```python block with `from mnist_jax import api`')


@pytest.fixture(scope='module')
def small_data(mnist_small_dir):
  return api.load_data('mnist', data_dir=mnist_small_dir, val_size=500, download=False)


# printed after the snippet, in its process: what the test checks of its variables
FACTS = '''
import json as _json
print(_json.dumps({'sizes': data.sizes(), 'step': int(state.step), 'shape': probs.shape,
                   'sums': probs.sum(-1).tolist(),
                   'right': float((probs.argmax(-1) == data.test_labels[:10]).mean())}))
'''


def test_readme_snippet_runs_as_written(mnist_small_dir, training_env):
  """The snippet as a user runs it: in a fresh process (200 training steps: with the
  flags of a training command, conftest.py), MNIST_DIR set to the fixture."""
  out = subprocess.run([sys.executable, '-c', readme_snippet() + FACTS], cwd=ROOT,
                       env=dict(training_env, MNIST_DIR=mnist_small_dir),
                       capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  facts = json.loads(out.stdout.splitlines()[-1])
  assert facts['sizes'] == {'train': 4000, 'val': 1000, 'test': 1000}
  assert facts['step'] == 200
  assert facts['shape'] == [10, 10]
  np.testing.assert_allclose(facts['sums'], 1, atol=1e-5)
  assert facts['right'] >= 0.7
  printed = out.stdout
  accuracy = float(re.search(r"'accuracy': ([0-9.]+)", printed).group(1))
  assert accuracy > 0.85   # 200 steps of 128 real digits
  assert 'predicted:' in printed


def test_fit_in_pieces_equals_fit_at_once(small_data):
  data = (small_data.train_images[:100], small_data.train_labels[:100])  # 3 batches/epoch
  state = api.create('mlp', hidden=(16,), learning_rate=1e-2, seed=1)
  once = api.fit(state, data, steps=8, batch_size=32, seed=5)
  twice = api.fit(api.fit(state, data, steps=3, batch_size=32, seed=5), data, steps=5,
                  batch_size=32, seed=5)
  assert int(state.step) == 0 and int(once.step) == int(twice.step) == 8
  for a, b in zip(jax.tree_util.tree_leaves(once.params),
                  jax.tree_util.tree_leaves(twice.params)):
    np.testing.assert_allclose(a, b, atol=1e-6)
  other = api.fit(state, data, steps=8, batch_size=32, seed=6)
  assert not np.allclose(other.params['output']['kernel'], once.params['output']['kernel'])


def test_create_routes_options_to_the_config_or_the_model():
  state = api.create('cnn', features=[4, 8], dense=(16,), dropout_rate=0.1,
                     learning_rate=3e-3, optimizer='sgd', augment=dict(rotate=5.0))
  assert state.model.features == (4, 8) and state.model.dropout_rate == 0.1
  assert float(state.opt_state.hyperparams['learning_rate']) == pytest.approx(3e-3)
  assert state.augment
  config = api.make_config('cnn', features=(4,), num_epochs=3)
  assert config.model.to_dict() == {'name': 'cnn', 'features': (4,)}
  assert config.num_epochs == 3
  kept = api.make_config(config=config, learning_rate=1e-2)
  assert kept.model.features == (4,) and kept.learning_rate == 1e-2
  assert api.make_config('lenet5', config=config).model.to_dict() == {'name': 'lenet5'}
  with pytest.raises(UserError, match="unknown option 'feature'"):
    api.create('cnn', feature=(4,))
  with pytest.raises(UserError, match='unknown model'):
    api.create('lenet6')


def test_predict_takes_uint8_floats_and_single_images(small_data):
  state = api.create('perceptron')
  images = small_data.test_images[:5]
  probs = api.predict(state, images)
  np.testing.assert_allclose(api.predict(state, images / 255.0), probs, atol=1e-5)
  np.testing.assert_allclose(api.predict(state, images[1, ..., 0]), probs[1], atol=1e-6)
  assert api.predict(state, images[..., 0]).shape == (5, 10)


def test_evaluate_and_load_data_check_their_inputs(small_data, mnist_small_dir):
  state = api.create('perceptron')
  result = api.evaluate(state, small_data.val_images, small_data.val_labels, batch_size=128)
  assert result['count'] == 500 and 0 <= result['accuracy'] <= 1
  manual = (api.predict(state, small_data.val_images).argmax(-1) == small_data.val_labels)
  assert result['accuracy'] == pytest.approx(manual.mean(), abs=1e-6)
  with pytest.raises(UserError, match='val_size'):
    api.load_data('mnist', data_dir=mnist_small_dir, download=False)   # 5,000 >= all
  with pytest.raises(UserError, match='batch_size'):
    api.fit(state, small_data, steps=1, batch_size=10**6)
  images, labels = idx.load_split(mnist_small_dir, 'test')
  with pytest.raises(UserError, match='uint8'):
    api.fit(state, (images / 255.0, labels), steps=1)
