"""Invariants of a training run that break silently when they break: one input
pipeline for every reader, resume and best-checkpoint rules, the step key, the
L2 penalty reported apart, damaged checkpoints set aside,
and a train state a Flax user recognizes (equal configs compile once)."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen as nn

from mnist_jax import api, train
from mnist_jax.config import defaults
from mnist_jax.data import idx, preprocess
from mnist_jax.engine import rundir, trainer
from mnist_jax.store import workdir as workdir_lib
from mnist_jax.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope='module')
def batch(mnist_small_dir):
  images, labels = idx.load_split(mnist_small_dir, 'train')
  return {'image': jnp.asarray(images[:64]), 'label': jnp.asarray(labels[:64])}


def _tiny(config, epochs=3):
  config.data.train_limit = 200
  config.num_epochs = epochs
  return config


# 1. standardize + augment: shifted-in pixels are background, not grey ---------------

def test_augmentation_fills_with_background_before_standardizing():
  config = defaults.get_config()
  config.data.standardize = True
  config.data.mean, config.data.std = preprocess.MNIST_MEAN, preprocess.MNIST_STD
  config.augment.translate = 3.0
  state = train.create_train_state(config, jax.random.key(0))
  ones = jnp.full((16, 28, 28, 1), 255, jnp.uint8)           # every pixel ink
  x = np.asarray(state.inputs(ones, jax.random.key(1)))
  background = (0.0 - preprocess.MNIST_MEAN) / preprocess.MNIST_STD
  ink = (1.0 - preprocess.MNIST_MEAN) / preprocess.MNIST_STD
  filled = ~np.isclose(x, ink, atol=1e-5)
  assert filled.any()                                           # some image was shifted
  np.testing.assert_allclose(x[filled], background, atol=1e-5)  # not 0 = grey
  # eval / predict use the same recorded settings, without augmentation
  np.testing.assert_allclose(state.inputs(ones), ink, atol=1e-5)


def test_the_run_records_its_preprocessing_and_every_reader_applies_it(
    tmp_path, small_config, mnist_small_dir):
  small_config.data.standardize = True
  small_config.data.train_limit = 500
  workdir = str(tmp_path / 'std')
  summary = trainer.train_and_evaluate(small_config, workdir).summary
  assert summary['preprocessing']['standardize'] is True
  config, state = api.load(workdir, 'latest')
  assert state.standardize and config.data.standardize
  images, labels = idx.load_split(mnist_small_dir, 'test')
  by_api = api.evaluate(state, images, labels)
  assert by_api['accuracy'] == pytest.approx(summary['test_accuracy'], abs=1e-6)
  probs = api.predict(state, images[:50])
  manual = jax.nn.softmax(state.apply_fn(state.variables, preprocess.standardize(
      preprocess.normalize(jnp.asarray(images[:50])), config.data.mean, config.data.std),
      train=False))
  np.testing.assert_allclose(probs, manual, atol=1e-5)


# 2. resuming with another num_epochs never changes the schedule silently ------------

@pytest.mark.parametrize('schedule', ['cosine', 'warmup_cosine', 'onecycle'])
def test_resume_with_another_horizon_is_refused(tmp_path, schedule):
  config = defaults.get_config()
  config.schedule, config.num_epochs = schedule, 4
  workdir_lib.record_config(config, str(tmp_path))
  config.num_epochs = 8
  with pytest.raises(UserError, match='num_epochs=4'):
    workdir_lib.check_resume(config, str(tmp_path))
  config.schedule = 'constant'   # η does not depend on the horizon: allowed
  (tmp_path / 'c').mkdir()
  workdir_lib.record_config(config, str(tmp_path / 'c'))
  config.num_epochs = 12
  workdir_lib.check_resume(config, str(tmp_path / 'c'))


# 3. a schedule over epochs is never sized without its length -----------------------

@pytest.mark.parametrize('schedule', ['cosine', 'warmup_cosine', 'onecycle'])
def test_a_schedule_over_epochs_needs_the_number_of_training_images(batch, schedule):
  """Sized for a guessed 1 step per epoch, η_t would reach 0 after num_epochs
  steps and the parameters stop changing: refused at creation, naming the fix (the
  MLP: the schedule is the same for every model)."""
  config = defaults.get_config()
  config.schedule = schedule
  config.model.name = 'mlp'
  with pytest.raises(UserError, match='num_train=N'):
    train.create_train_state(config, jax.random.key(0))
  state = train.create_train_state(config, jax.random.key(0), num_train=64 * 30)
  step = jax.jit(train.train_step)
  params = []
  for _ in range(config.num_epochs + 5):   # past where a 1-step-per-epoch schedule ends
    state, _ = step(state, batch, jax.random.key(1))
    params.append(state.params['output']['kernel'])
  assert float(jnp.abs(params[-1] - params[-2]).max()) > 0


def test_a_constant_schedule_needs_no_number_of_training_images(batch):
  state = train.create_train_state(defaults.get_config(), jax.random.key(0))
  state, metrics = jax.jit(train.train_step)(state, batch, jax.random.key(1))
  assert np.isfinite(float(metrics['loss']))


# 4. the best checkpoint is the epoch summary.json names ----------------------------

def test_best_checkpoint_is_saved_whenever_validation_improves(
    tmp_path, small_config, script_val_accuracy):
  _tiny(small_config, epochs=3)
  small_config.checkpoint_every_epochs = 0          # 'latest' only at the end
  script_val_accuracy([0.5, 0.9, 0.7] * 2)          # val improves at epoch 2 only
  workdir = str(tmp_path / 'best')
  summary = trainer.train_and_evaluate(small_config, workdir).summary
  assert summary['best_epoch'] == 2
  _, _, meta = rundir.load_run(workdir, 'best')
  assert meta['epoch'] == summary['best_epoch'] == 2


# 5. one key in a research loop still gives new randomness every step ---------------

def test_the_step_counter_is_folded_into_the_key(batch):
  config = defaults.get_config()
  config.model = defaults.get_config().model
  config.model.name = 'mlp'
  config.model.dropout_rate = 0.5
  state = train.create_train_state(config, jax.random.key(0))
  step = jax.jit(train.train_step)
  key = jax.random.key(3)
  _, m0 = step(state, batch, key)
  _, m1 = step(state.replace(step=state.step + 1), batch, key)   # same params, same key
  assert abs(float(m0['loss']) - float(m1['loss'])) > 1e-4       # other dropout masks
  _, again = step(state, batch, key)
  assert float(again['loss']) == float(m0['loss'])                # still deterministic


# 6. L2: the data loss and the penalty apart; adamw + l2 refused --------------------

def test_l2_penalty_is_reported_apart_from_the_data_loss(batch):
  config = defaults.get_config()
  config.weight_decay, config.weight_decay_mode = 0.01, 'l2'
  state = train.create_train_state(config, jax.random.key(0))
  _, metrics = jax.jit(train.train_step)(state, batch, jax.random.key(1))
  sums = jax.jit(train.eval_step)(state, batch)
  assert float(metrics['loss']) == pytest.approx(float(sums['loss'] / sums['count']), rel=1e-5)
  assert float(metrics['l2_penalty']) == pytest.approx(
      0.01 * float(train.l2_penalty(state.params)), rel=1e-5)


def test_adamw_with_l2_is_refused():
  config = defaults.get_config()
  config.optimizer, config.weight_decay, config.weight_decay_mode = 'adamw', 1e-4, 'l2'
  with pytest.raises(UserError, match="weight_decay_mode='decoupled'"):
    train.create_train_state(config, jax.random.key(0))


# 7. api reads the state's own settings ---------------------------------------------

def test_api_fit_uses_the_batch_size_the_schedule_was_sized_for(mnist_small_dir):
  data = api.load_data(data_dir=mnist_small_dir, val_size=500, download=False)
  state = api.create('lenet5', batch_size=64, schedule='cosine', num_train=4500)
  assert api._batch_size(state, None) == 64    # pylint: disable=protected-access
  with pytest.raises(UserError, match='sized for'):
    api.fit(state, data, steps=1, batch_size=128)
  after = api.fit(state, data, steps=2)
  assert int(after.step) == 2


# 8. a damaged checkpoint is detected on resume and the previous one is used ---------

def test_resume_skips_a_damaged_latest_checkpoint(tmp_path, small_config):
  _tiny(small_config, epochs=2)
  workdir = str(tmp_path / 'damaged')
  first = trainer.train_and_evaluate(small_config, workdir).summary
  data = os.path.join(workdir, 'checkpoints', 'latest', '2', 'state', 'ocdbt.process_0', 'd')
  biggest = max((os.path.join(data, n) for n in os.listdir(data)), key=os.path.getsize)
  with open(biggest, 'r+b') as f:
    f.seek(os.path.getsize(biggest) // 2)
    chunk = f.read(16)
    f.seek(os.path.getsize(biggest) // 2)
    f.write(bytes(255 - b for b in chunk))
  os.remove(os.path.join(workdir, 'summary.json'))
  again = trainer.train_and_evaluate(small_config, workdir).summary   # resumes from epoch 1
  assert np.isfinite(again['test_loss'])
  assert again['test_accuracy'] == pytest.approx(first['test_accuracy'], abs=1e-6)
  assert os.listdir(os.path.join(workdir, 'checkpoints', 'damaged'))


# The train state: flax's TrainState, hashable static settings ----------------------

def test_equal_configs_compile_once_and_states_tree_map(batch):
  traces = []

  def step(state, batch, rng):
    traces.append(1)
    return train.train_step(state, batch, rng)

  step = jax.jit(step)
  config = defaults.get_config()
  a = train.create_train_state(config, jax.random.key(0))
  b = train.create_train_state(defaults.get_config(), jax.random.key(1))
  assert isinstance(a, __import__('flax').training.train_state.TrainState)
  step(a, batch, jax.random.key(2))
  step(b, batch, jax.random.key(2))
  assert len(traces) == 1
  diff = jax.tree_util.tree_map(lambda x, y: x - y, a, b)
  assert float(jnp.abs(diff.params['C1']['kernel']).max()) > 0


def test_train_step_takes_your_own_module_and_optax_chain(batch):
  class Tiny(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
      x = nn.Dropout(0.1, deterministic=not train)(x.reshape((x.shape[0], -1)))
      return nn.Dense(10)(x)

  model = Tiny()
  params = model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))['params']
  state = train.TrainState.create(apply_fn=model.apply, params=params,
                                  tx=optax.sgd(0.1))
  losses = []
  for _ in range(5):
    state, metrics = jax.jit(train.train_step)(state, batch, jax.random.key(0))
    losses.append(float(metrics['loss']))
  assert losses[-1] < losses[0] and int(state.step) == 5
