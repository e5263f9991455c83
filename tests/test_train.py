"""The public train API: state creation, pure steps, jit/vmap composition, L2."""
import os
import platform

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from mnist_jax import train
from mnist_jax.config import defaults, files as config_files
from mnist_jax.nn import optim
from mnist_jax.data import idx, preprocess
from mnist_jax.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def batch(mnist_small_dir):
  images, labels = idx.load_split(mnist_small_dir, 'train')
  return {'image': preprocess.normalize(jnp.asarray(images[:128])),
          'label': jnp.asarray(labels[:128])}


def test_lenet_state_has_61706_params():
  state = train.create_train_state(defaults.get_config(), jax.random.key(0))
  n = sum(p.size for p in jax.tree_util.tree_leaves(state.params))
  # C1 156 + C3 2,416 + C5 48,120 + F6 10,164 + output 850
  assert n == 156 + 2416 + 48120 + 10164 + 850 == 61706


@pytest.mark.parametrize('name', ['lenet', 'speedrun'])   # PatchConv; nn.Conv + batch norm
def test_init_at_optimization_level_1_gives_the_parameters_of_level_3(name, monkeypatch):
  """create_train_state compiles init at level 1 on the CPU: the variables are those
  of XLA's default level 3, bit for bit."""
  monkeypatch.setenv('XLA_FLAGS', '')   # as a user's process has it (this suite sets -O0)
  assert train.once_compiler_options() == {'xla_backend_optimization_level': 1}
  model = train.build_model(config_files.load(os.path.join(ROOT, 'configs', f'{name}.py')))
  rngs, x = {'params': jax.random.key(3), 'dropout': jax.random.key(3)}, jnp.zeros((1, 28, 28, 1))
  ours = train.init_program(model, train.once_compiler_options())(rngs, x)
  default = train.init_program(model, {'xla_backend_optimization_level': 3})(rngs, x)
  for a, b in zip(jax.tree_util.tree_leaves(ours), jax.tree_util.tree_leaves(default)):
    np.testing.assert_array_equal(a, b)
  monkeypatch.setenv('XLA_FLAGS', '--xla_backend_optimization_level=0')
  assert train.once_compiler_options() == {}     # a level the user set is kept


def test_cpu_ynnpack_off_compiles_the_step_without_ynnpack_to_the_same_step(batch,
                                                                          monkeypatch):
  """config.cpu_ynnpack = False (configs/speedrun.py) compiles the step with XLA:CPU's
  own kernels: no YNNPACK fusion in its program, and the step it takes is the default
  program's up to float rounding (the speedrun's SpeedNet: nn.Conv, batch norm, muon)."""
  monkeypatch.setenv('XLA_FLAGS', '')
  config = config_files.load(os.path.join(ROOT, 'configs', 'speedrun.py'))
  assert train.compiler_options(config) == {'xla_cpu_experimental_ynn_fusion_type': ''}
  config.cpu_ynnpack = True
  assert train.compiler_options(config) is None               # XLA's defaults
  monkeypatch.setenv('XLA_FLAGS', '--xla_cpu_experimental_ynn_fusion_type=')
  config.cpu_ynnpack = False
  assert train.compiler_options(config) is None               # the user's flag is kept
  state = train.create_train_state(config, jax.random.key(0), num_train=1000)
  key = jax.random.key(1)
  own = jax.jit(train.train_step,
                compiler_options={'xla_cpu_experimental_ynn_fusion_type': ''})
  default = jax.jit(train.train_step)
  if platform.machine() in ('x86_64', 'AMD64'):   # where XLA:CPU fuses into YNNPACK
    assert 'ynn_fusion' in default.lower(state, batch, key).compile().as_text()
  assert 'ynn_fusion' not in own.lower(state, batch, key).compile().as_text()
  (a, ma), (b, mb) = own(state, batch, key), default(state, batch, key)
  assert abs(float(ma['loss']) - float(mb['loss'])) < 1e-5
  for x, y in zip(jax.tree_util.tree_leaves((a.params, a.batch_stats)),
                  jax.tree_util.tree_leaves((b.params, b.batch_stats))):
    np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5)


def test_a_state_built_under_a_transformation_traces_its_init(monkeypatch):
  """Readers of a run build the state's shapes under jax.eval_shape (nothing is
  compiled); with a user's XLA_FLAGS (init compiled at level 1) that still works."""
  monkeypatch.setenv('XLA_FLAGS', '')
  shapes = jax.eval_shape(lambda: train.create_train_state(defaults.get_config(),
                                                            jax.random.key(0)))
  assert shapes.params['C1']['kernel'].shape == (5, 5, 1, 6)


def test_train_steps_lower_the_loss_on_real_digits(batch):
  state = train.create_train_state(defaults.get_config(), jax.random.key(0))
  step = jax.jit(train.train_step)
  _, first = step(state, batch, jax.random.key(1))
  for i in range(20):
    state, metrics = step(state, batch, jax.random.key(i))
  assert int(state.step) == 20
  assert float(metrics['loss']) < 0.5 * float(first['loss'])


def test_train_step_is_pure_and_deterministic(batch):
  config = defaults.get_config()   # a small MLP with dropout: the eager step runs op by op
  config.model = ml_collections.ConfigDict({'name': 'mlp', 'hidden': (64,),
                                            'dropout_rate': 0.1})
  state = train.create_train_state(config, jax.random.key(0))
  a, _ = train.train_step(state, batch, jax.random.key(3))
  b, _ = jax.jit(train.train_step)(state, batch, jax.random.key(3))
  assert int(state.step) == 0  # the input state is untouched
  for x, y in zip(jax.tree_util.tree_leaves(a.params), jax.tree_util.tree_leaves(b.params)):
    np.testing.assert_allclose(x, y, atol=1e-6)


def test_train_step_vmaps_over_seeds(batch):
  """vmap over independently initialised states = a batch of models."""
  config = defaults.get_config()
  template = train.create_train_state(config, jax.random.key(0))
  init = lambda k: template.replace(
      params=template.model.init(k, jnp.zeros((1, 28, 28, 1)))['params'])
  states = jax.jit(jax.vmap(init))(jax.random.split(jax.random.key(0), 3))
  states = states.replace(opt_state=jax.jit(jax.vmap(template.tx.init))(states.params))
  step = jax.vmap(train.train_step, in_axes=(0, None, None))
  new, metrics = jax.jit(step)(states, batch, jax.random.key(1))
  assert metrics['loss'].shape == (3,)
  single = jax.jit(train.train_step)
  for i in range(3):
    one = jax.tree_util.tree_map(lambda x: np.asarray(x)[i], states)   # no op to compile
    ref, m = single(one, batch, jax.random.key(1))
    np.testing.assert_allclose(m['loss'], metrics['loss'][i], rtol=1e-5)
    np.testing.assert_allclose(ref.params['C1']['kernel'], new.params['C1']['kernel'][i],
                               atol=1e-5)


def test_eval_step_counts_only_unmasked(batch):
  state = train.create_train_state(defaults.get_config(), jax.random.key(0))
  mask = jnp.concatenate([jnp.ones(100), jnp.zeros(28)])
  eval_step = jax.jit(train.eval_step)
  full = eval_step(state, {k: v[:100] for k, v in batch.items()})
  masked = eval_step(state, {**batch, 'mask': mask})
  assert float(masked['count']) == 100
  np.testing.assert_allclose(masked['loss'], full['loss'], rtol=1e-5)
  assert float(masked['correct']) == float(full['correct'])


def test_l2_weight_decay_adds_2_lambda_w_to_the_gradient(batch):
  """weight_decay_mode='l2': L + λ‖w‖², so one SGD step moves w by an extra −η·2λw."""
  config = defaults.get_config()
  config.optimizer, config.learning_rate = 'sgd', 0.1
  plain = train.create_train_state(config, jax.random.key(0))
  config.weight_decay, config.weight_decay_mode = 0.01, 'l2'
  decayed = train.create_train_state(config, jax.random.key(0))
  a, _ = jax.jit(train.train_step)(plain, batch, jax.random.key(1))
  b, _ = jax.jit(train.train_step)(decayed, batch, jax.random.key(1))
  w = plain.params['C5']['kernel']
  np.testing.assert_allclose(b.params['C5']['kernel'] - a.params['C5']['kernel'],
                             -0.1 * 2 * 0.01 * w, atol=1e-6)
  np.testing.assert_allclose(b.params['C5']['bias'], a.params['C5']['bias'], atol=1e-7)
  assert float(train.l2_penalty({'k': jnp.ones((2, 2)), 'b': jnp.ones(3)})) == 4.0


def test_decoupled_weight_decay_shrinks_weights_directly():
  """weight_decay_mode='decoupled' with a zero gradient: w ← w − ηλw exactly."""
  config = defaults.get_config()
  config.optimizer, config.learning_rate, config.weight_decay = 'adam', 0.1, 0.5
  tx = optim.create_optimizer(config, 10)
  params = {'kernel': jnp.ones((2, 2)), 'bias': jnp.ones(2)}
  updates, _ = tx.update(jax.tree_util.tree_map(jnp.zeros_like, params), tx.init(params),
                         params)
  np.testing.assert_allclose(updates['kernel'], -0.1 * 0.5 * params['kernel'])
  np.testing.assert_allclose(updates['bias'], 0.0)


def _lowered_step(**overrides) -> str:
  """The HLO text of jit(train_step) for an MLP config with ``overrides``."""
  config = defaults.get_config()
  config.model.name, config.model.hidden = 'mlp', (16,)
  config.schedule, config.warmup_epochs, config.weight_decay = 'warmup_cosine', 0.5, 1e-4
  config.update(overrides)
  state = train.create_train_state(config, jax.random.key(0), num_train=1000)
  batch = {'image': jnp.zeros((8, 28, 28, 1), jnp.uint8), 'label': jnp.zeros(8, jnp.int32)}
  return jax.jit(train.train_step).lower(state, batch, jax.random.key(1)).as_text()


def test_sweep_hyperparameters_are_inputs_so_a_sweep_compiles_once():
  """η, β and λ live in the optimizer state (η_t = η · s(t), s the peak-1
  schedule), not in the program: trials that differ only in them lower to the
  same HLO, so the persistent compilation cache serves trials 2..N of a sweep.
  The schedule's shape is part of the program."""
  base = _lowered_step()
  assert _lowered_step(learning_rate=3e-3, momentum=0.8, weight_decay=1e-3) == base
  assert _lowered_step(schedule='cosine') != base


@pytest.mark.parametrize('schedule', ['warmup_cosine', 'onecycle'])
def test_the_step_is_the_peak_times_the_schedule(schedule):
  """SGD with g = 1 moves every weight by −η_t = −η·s(t), the config's schedule
  (learning_rate_schedule) at t = 0..4, for two peaks η."""
  config = defaults.get_config()
  config.optimizer, config.schedule, config.warmup_epochs = 'sgd', schedule, 0.4
  params = {'kernel': jnp.ones((2, 2))}
  for lr in (0.1, 0.03):
    config.learning_rate = lr
    tx = optim.create_optimizer(config, steps_per_epoch=10)
    eta, opt_state = optim.learning_rate_schedule(config, 10), tx.init(params)
    update = jax.jit(tx.update)
    for t in range(5):
      updates, opt_state = update({'kernel': jnp.ones((2, 2))}, opt_state, params)
      np.testing.assert_allclose(updates['kernel'], -eta(t), rtol=1e-6)
      assert float(eta(t)) > 0 or t == 0


@pytest.mark.parametrize('schedule', optim.SCHEDULES)
def test_schedules_peak_at_the_learning_rate(schedule):
  config = defaults.get_config()
  config.schedule, config.learning_rate, config.warmup_epochs = schedule, 0.01, 1
  config.num_epochs = 4
  lr = optim.learning_rate_schedule(config, steps_per_epoch=100)
  values = np.array([lr(t) for t in range(400)])
  assert values.max() == pytest.approx(0.01, rel=1e-3)
  if schedule != 'constant':
    assert values[-1] < 0.01 * 0.01
  if schedule in ('warmup_cosine', 'onecycle'):
    assert values[0] < 0.005 and np.argmax(values) == pytest.approx(100, abs=2)


def test_bad_names_raise_user_errors():
  for key, value in [('loss', 'hinge'), ('optimizer', 'lion'), ('schedule', 'step'),
                     ('compute_dtype', 'float8')]:
    config = defaults.get_config()
    config[key] = value
    with pytest.raises(UserError, match=value):
      train.create_train_state(config, jax.random.key(0))
  config = defaults.get_config()
  config.model.name = 'transformer'
  with pytest.raises(UserError, match="unknown model 'transformer'"):
    train.create_train_state(config, jax.random.key(0))
  config = defaults.get_config()
  config.model.widht = 3
  with pytest.raises(UserError, match='no option widht'):
    train.create_train_state(config, jax.random.key(0))


def test_loop_evaluation_is_exact_and_compiles_once(mnist_small_dir):
  """evaluation.evaluate: padded batches count only real examples, equal a direct
  eval_step over the split, and splits of different lengths share one compile."""
  from mnist_jax import parallel  # pylint: disable=g-import-not-at-top
  from mnist_jax.engine import evaluation  # pylint: disable=g-import-not-at-top
  config = defaults.get_config()
  state = train.create_train_state(config, jax.random.key(0))
  images, labels = idx.load_split(mnist_small_dir, 'test')
  mesh = parallel.make_mesh()
  eval_fn = evaluation.pass_fn(mesh, stacked=False)
  before = eval_fn._cache_size()   # pylint: disable=protected-access
  results = {}
  for n in (300, 1000):                         # 3 and 8 padded batches
    split = evaluation.padded_split(images[:n], labels[:n], 128, mesh)
    results[n] = evaluation.evaluate(eval_fn, state, {'test': split})['test']['model']['raw']
  want = jax.jit(train.eval_step)(state, {'image': preprocess.normalize(jnp.asarray(images[:300])),
                                          'label': jnp.asarray(labels[:300])})
  assert results[300]['accuracy'] == pytest.approx(float(want['correct']) / 300)
  assert results[300]['loss'] == pytest.approx(float(want['loss']) / 300, rel=1e-5)
  assert eval_fn._cache_size() - before <= 1   # pylint: disable=protected-access
