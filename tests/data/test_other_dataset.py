"""Any 28x28 greyscale dataset: a synthetic 3-class set (bars and squares on a grey
background, a mean and std far from MNIST's) trained one epoch from IDX files, then
read back by the run loader, api, predict and the serve page's model: the class
count and the standardization come from the data the run trained on."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from mnist_jax import api, predict
from mnist_jax.config import defaults
from mnist_jax.data import describe, idx, pipeline, preprocess
from mnist_jax.engine import rundir, trainer

pytestmark = pytest.mark.xdist_group('other_dataset')


def shapes(n: int, seed: int):
  """uint8 (n, 28, 28): class 0 a horizontal bar, 1 a vertical bar, 2 a square,
  each bright (220) at a random place on grey (90 ± noise)."""
  r = np.random.default_rng(seed)
  labels = np.arange(n) % 3
  images = (90 + r.integers(-20, 21, (n, 28, 28))).astype(np.uint8)
  for x, k in zip(images, labels):
    a, b = r.integers(4, 14, 2)
    if k == 0:
      x[a + 4:a + 8, b - 2:b + 14] = 220
    elif k == 1:
      x[a - 2:a + 14, b + 4:b + 8] = 220
    else:
      x[a:a + 10, b:b + 10] = 220
  return images, labels


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  d = str(tmp_path_factory.mktemp('shapes3'))
  idx.write_split(d, 'train', *shapes(600, 0))
  idx.write_split(d, 'test', *shapes(150, 1))
  return d


@pytest.fixture(scope='module')
def config(data_dir):
  c = defaults.get_config()
  c.data.update(source='idx', data_dir=data_dir, name='shapes3', download=False,
                val_size=100, standardize=True)
  c.model.name = 'mlp'
  c.batch_size, c.eval_batch_size, c.num_epochs, c.log_every_steps = 50, 150, 1, 100
  c.write_plots = False
  return c


@pytest.fixture(scope='module')
def run(tmp_path_factory, config):
  workdir = str(tmp_path_factory.mktemp('shapes3_run'))
  summary = trainer.train_and_evaluate(config, workdir).summary
  return workdir, summary


def test_the_run_records_the_statistics_and_classes_of_its_training_split(run, data_dir):
  workdir, _ = run
  with open(os.path.join(workdir, 'config.json')) as f:
    data = json.load(f)['data']
  train_images = idx.load_split(data_dir, 'train')[0][:500]     # val_size = 100
  mean, std = describe.pixel_stats(train_images)
  assert (data['mean'], data['std']) == (mean, std)
  assert abs(mean - preprocess.MNIST_MEAN) > 0.2 and abs(std - preprocess.MNIST_STD) > 0.05
  assert data['num_classes'] == 3 and data['label_names'] == ['0', '1', '2']
  assert data['digits'] is False and data['num_train'] == 500


def test_the_run_loader_gives_the_model_of_the_data(run):
  workdir, _ = run
  t = rundir.load_trained(workdir, 'best')
  assert t.num_classes == 3 and t.label_names == ('0', '1', '2') and not t.digits
  assert t.weights == 'raw' and t.stats == (t.config.data.mean, t.config.data.std)
  assert t.state.standardize == t.stats
  out = jax.eval_shape(lambda x: t.model.apply(t.state.variables, x, train=False),
                       jnp.zeros((2, 28, 28, 1)))
  assert out.shape == (2, 3)


def test_api_predicts_three_classes_standardized_by_the_data(run, data_dir):
  workdir, summary = run
  config, state = api.load(workdir, 'latest')
  images, labels = idx.load_split(data_dir, 'test')
  probs = api.predict(state, images)
  assert probs.shape == (150, 3)
  x = preprocess.standardize(preprocess.normalize(jnp.asarray(images[..., None])),
                             config.data.mean, config.data.std)
  manual = jax.nn.softmax(state.apply_fn(state.variables, x, train=False))
  np.testing.assert_allclose(probs, manual, atol=1e-5)
  assert api.evaluate(state, images, labels)['accuracy'] == pytest.approx(
      summary['test_accuracy'], abs=1e-6)
  assert summary['test_accuracy'] > 0.6          # it learned the shapes in one epoch


def test_api_create_takes_classes_and_statistics_from_a_dataset(config):
  data = pipeline.load(config.data)
  state = api.create('mlp', config=config, data=data)
  assert state.standardize == describe.pixel_stats(data.train_images)
  assert api.predict(state, data.test_images[:4]).shape == (4, 3)


def test_predict_prepares_pictures_without_the_digit_steps(run, tmp_path):
  workdir, _ = run
  picture = np.full((120, 90), 40, np.uint8)
  picture[20:100, 40:52] = 230                       # a vertical bar, light on dark
  path = str(tmp_path / 'bar.png')
  Image.fromarray(picture).save(path)
  t, results = predict.classify(workdir, [path])
  (_, probs, _), = results
  assert probs.shape == (3,) and not t.digits
  line = predict.format_line(path, probs, None, ('h-bar', 'v-bar', 'square'))
  assert line.split(': ')[1].split()[0] in ('h-bar', 'v-bar', 'square')
  from mnist_jax.inspection import image  # pylint: disable=g-import-not-at-top
  fitted = image.prepare_image(picture, digits=False)
  rows = np.flatnonzero(fitted.max(1) > 64)
  assert rows[0] == 0 and rows[-1] == 27           # the longest side fills 28 px, not 20


def test_the_serve_model_answers_with_the_runs_classes(run):
  workdir, _ = run
  from mnist_jax.inspection import live  # pylint: disable=g-import-not-at-top
  loaded = live.load('shapes3', workdir)
  assert loaded.summary()['classes'] == ['0', '1', '2']
  picture = np.zeros((50, 50), np.uint8)
  picture[10:40, 20:28] = 255
  out = loaded.predict(picture)
  assert len(out['probs']) == 3
  assert [t['title'] for t in out['steps']][-1] == 'centred'


def test_fit_refuses_a_schedule_sized_for_other_data(config):
  from mnist_jax.errors import UserError  # pylint: disable=g-import-not-at-top
  data = pipeline.load(config.data)
  with pytest.raises(UserError, match='needs the number of training images'):
    api.create('mlp', schedule='cosine', batch_size=50)  # no data: N unknown
  other = api.create('mlp', schedule='cosine', batch_size=50, num_train=1000)
  with pytest.raises(UserError, match="'cosine' schedule is sized for 20 steps per epoch"):
    api.fit(other, data, steps=1, batch_size=50)
  sized = api.create('mlp', schedule='cosine', data=data, batch_size=50)
  assert sized.tx.steps_per_epoch == 10
  api.fit(sized, data, steps=1)


def test_the_run_loader_honours_the_runs_model_weights(tmp_path, config):
  """config.model_weights says which weights are the model: 'raw' where a run does
  not set it (the default), 'ema' where it does; an argument overrides it."""
  c = config.copy_and_resolve_references()
  c.ema_decay, c.data.train_limit = 0.9, 200
  workdir = str(tmp_path / 'ema')
  trainer.train_and_evaluate(c, workdir)
  raw = rundir.load_trained(workdir, 'latest')
  assert raw.weights == 'raw'
  path = os.path.join(workdir, 'config.json')
  with open(path) as f:
    saved = json.load(f)
  saved['model_weights'] = 'ema'
  with open(path, 'w') as f:
    json.dump(saved, f)
  ema = rundir.load_trained(workdir, 'latest')
  assert ema.weights == 'ema' and ema.meta['weights'] == 'ema'
  assert jax.tree_util.tree_all(jax.tree_util.tree_map(
      lambda a, b: np.array_equal(a, b), ema.params, raw.state.ema['params']))
  assert not np.array_equal(jax.tree_util.tree_leaves(ema.params)[0],
                            jax.tree_util.tree_leaves(raw.params)[0])
  assert rundir.load_trained(workdir, 'latest', weights='raw').weights == 'raw'
  _, state = api.load(workdir, 'latest')
  assert jax.tree_util.tree_all(jax.tree_util.tree_map(
      lambda a, b: np.array_equal(a, b), state.params, ema.params))
