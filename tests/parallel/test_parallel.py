"""Data parallelism on 8 fake CPU devices (XLA_FLAGS must be set before JAX starts).

The checks share one fresh process (one JAX start, one compilation of what they
share): ``checks`` runs each check's code in its own function there and records
its output or its traceback, and each test asserts on its check's record, so a
failing check fails its own test with its own message. Where the model does not
matter the checks use the MLP, whose programs compile in a fraction of LeNet-5's
time; batch norm is checked on the CNN."""
import os
import subprocess
import sys
import textwrap

import pytest

# pytest-xdist: one worker runs this file, so its one process starts once
pytestmark = pytest.mark.xdist_group('parallel')

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MARK = '@@check '   # starts the line that ends a check's output: MARK name ok|failed

COMMON = '''
import functools, os, sys, traceback, jax, jax.numpy as jnp, numpy as np
from mnist_jax import train
from mnist_jax.config import defaults
from mnist_jax.data import idx, preprocess
assert jax.device_count() == 8, jax.devices()
DATA, TMP = sys.argv[1], sys.argv[2]   # the small MNIST fixture; a fresh folder
images, labels = idx.load_split('tests/fixtures/mnist_small', 'train')
batch = {'image': preprocess.normalize(jnp.asarray(images[:64])), 'label': jnp.asarray(labels[:64])}
def max_diff(a, b):
  return max(float(jnp.max(jnp.abs(x - y))) for x, y in
             zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))
def replicate(tree):  # a leading device axis for pmap
  return jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (8,) + x.shape), tree)
def shard(tree):
  return jax.tree_util.tree_map(lambda x: x.reshape((8, -1) + x.shape[1:]), tree)
MARK = sys.argv[3]
def run_check(name, check):
  try:
    check(os.path.join(TMP, name))
    outcome = 'ok'
  except Exception:  # the check's own test reports it
    traceback.print_exc(file=sys.stdout)
    outcome = 'failed'
  print(MARK + name + ' ' + outcome, flush=True)
'''


def script(checks: dict) -> str:
  """COMMON, then each check's code as the body of a function of its folder ``tmp``,
  run by run_check."""
  parts = [COMMON]
  for name, code in checks.items():
    body = textwrap.indent(textwrap.dedent(code), '  ')
    parts.append(f'def check_{name}(tmp):\n{body}\nrun_check({name!r}, check_{name})\n')
  return '\n'.join(parts)


@pytest.fixture(scope='module')
def checks(tmp_path_factory, mnist_small_dir, cpu_devices_env):
  """Runs every check of CHECKS in one process with 8 CPU devices; returns
  ``output(name)``: that check's printed lines, or a failure with its traceback."""
  tmp = tmp_path_factory.mktemp('parallel')
  out = subprocess.run([sys.executable, '-c', script(CHECKS), mnist_small_dir, str(tmp),
                        MARK], cwd=ROOT, env=cpu_devices_env(8), capture_output=True,
                       text=True, timeout=600)
  records, lines = {}, []
  for line in out.stdout.splitlines():
    if line.startswith(MARK):
      name, outcome = line[len(MARK):].split()
      records[name] = (outcome, '\n'.join(lines))
      lines = []
    else:
      lines.append(line)

  def output(name):
    assert name in records, (f'check {name} never ended (exit {out.returncode}):\n'
                             + out.stdout[-3000:] + out.stderr[-3000:])
    outcome, text = records[name]
    assert outcome == 'ok', f'check {name} failed:\n{text[-3000:]}'
    return text
  return output


JIT_AND_SHARD_MAP = '''
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
config = defaults.get_config()
config.model.name = 'cnn'
config.optimizer = 'sgd'; config.learning_rate = 0.1
state = train.create_train_state(config, jax.random.key(0))
assert state.batch_stats, 'cnn should have batch norm'
single, m1 = jax.jit(train.train_step)(state, batch, jax.random.key(1))
assert max_diff(single.params, state.params) > 1e-3
mesh = jax.make_mesh((8,), ('batch',), axis_types=(AxisType.Auto,))
with jax.set_mesh(mesh):
  state = jax.device_put(state, NamedSharding(mesh, P()))
  sharded = jax.device_put(batch, NamedSharding(mesh, P('batch')))
  by_jit, m_jit = jax.jit(train.train_step)(state, sharded, jax.random.key(1))
  per_device = jax.jit(jax.shard_map(functools.partial(train.train_step, axis_name='batch'),
                                     in_specs=(P(), P('batch'), P()), out_specs=P()))
  by_shard_map, m_map = per_device(state, sharded, jax.random.key(1))
assert len(sharded['image'].sharding.device_set) == 8
for name, new, m in (('jit', by_jit, m_jit), ('shard_map', by_shard_map, m_map)):
  d, s = max_diff(single.params, new.params), max_diff(single.batch_stats, new.batch_stats)
  print(name, 'diff', d, s)
  assert d < 1e-4 and s < 1e-5, (name, d, s)
  assert abs(float(m1['loss']) - float(m['loss'])) < 1e-5, name
'''


def test_jit_and_shard_map_steps_equal_single_device_step(checks):
  """Under jax.set_mesh over 8 devices, jax.jit of train_step on a batch of 64
  sharded by NamedSharding (8 per device), and jax.shard_map of the per-device
  form (axis_name), give the parameters, batch-norm statistics and loss of one
  single-device step over the same 64 images."""
  assert checks('jit_and_shard_map').count('diff') == 2


NNX_MODULE = '''
import optax
from flax import nnx
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
from mnist_jax import nnx_bridge
class Net(nnx.Module):
  def __init__(self, rngs):
    self.conv = nnx.Conv(1, 4, (3, 3), use_bias=False, rngs=rngs)
    self.bn = nnx.BatchNorm(4, rngs=rngs)
    self.dropout = nnx.Dropout(0.3, rngs=rngs)
    self.dense = nnx.Linear(28 * 28 * 4, 10, rngs=rngs)
  def __call__(self, x):
    x = nnx.relu(self.bn(self.conv(x)))
    return self.dense(self.dropout(x.reshape((x.shape[0], -1))))
state = nnx_bridge.from_nnx(Net(nnx.Rngs(0)), optax.sgd(0.1))
single, m1 = jax.jit(train.train_step)(state, batch, jax.random.key(1))
mesh = jax.make_mesh((8,), ('batch',), axis_types=(AxisType.Auto,))
with jax.set_mesh(mesh):
  sharded, m8 = jax.jit(train.train_step)(jax.device_put(state, NamedSharding(mesh, P())),
                                          jax.device_put(batch, NamedSharding(mesh, P('batch'))),
                                          jax.random.key(1))
d, s = max_diff(single.params, sharded.params), max_diff(single.batch_stats, sharded.batch_stats)
print('diff', d, s)
assert max_diff(single.params, state.params) > 1e-3
assert d < 1e-4 and s < 1e-5, (d, s)
assert abs(float(m1['loss']) - float(m8['loss'])) < 1e-5
'''


def test_nnx_module_sharded_step_equals_single_device_step(checks):
  """A flax.nnx module with batch norm and dropout (nnx_bridge.from_nnx) under jax.jit
  with the batch sharded over 8 devices: the same parameters, batch-norm statistics
  and loss as on one device (dropout masks and batch statistics are global)."""
  assert 'diff' in checks('nnx_module')


PMAP = '''
config = defaults.get_config()
config.model.name = 'cnn'
config.optimizer = 'sgd'; config.learning_rate = 0.1
state = train.create_train_state(config, jax.random.key(0))
single, m1 = jax.jit(train.train_step)(state, batch, jax.random.key(1))
p_step = jax.pmap(functools.partial(train.train_step, axis_name='batch'), axis_name='batch')
multi, m8 = p_step(replicate(state), shard(batch), jax.random.split(jax.random.key(1), 8))
first = jax.tree_util.tree_map(lambda x: x[0], multi)
d = max_diff(single.params, first.params); s = max_diff(single.batch_stats, first.batch_stats)
print('diff', d, s)
assert d < 1e-4 and s < 1e-5, (d, s)
assert abs(float(m1['loss']) - float(m8['loss'][0])) < 1e-5
assert max_diff(multi.params, jax.tree_util.tree_map(lambda x: jnp.stack([x] * 8), first.params)) == 0
'''


def test_pmap_step_equals_single_device_step(checks):
  """train_step stays pmap-able: with batch norm, one pmapped step over a global
  batch of 64 (8 per device) normalises with the statistics of the global batch
  and gives the parameters, running averages and loss of one single-device step."""
  assert 'diff' in checks('pmap')


SHARDED_LOOP = '''
from mnist_jax.engine import trainer
def cfg(n):
  c = defaults.get_config()
  c.model.name = 'mlp'
  c.data.source = 'idx'; c.data.data_dir = DATA; c.data.val_size = 1000
  c.data.train_limit = 1024; c.batch_size = 64; c.eval_batch_size = 200
  c.num_epochs = 1; c.num_devices = n; c.log_every_steps = 8
  return c
a = trainer.train_and_evaluate(cfg(1), os.path.join(tmp, 'one')).summary
b = trainer.train_and_evaluate(cfg(8), os.path.join(tmp, 'eight')).summary
print('acc', a['test_accuracy'], b['test_accuracy'], a['devices'], b['devices'])
assert a['devices'].startswith('1 x') and b['devices'].startswith('8 x')
assert abs(a['test_loss'] - b['test_loss']) < 1e-4, (a['test_loss'], b['test_loss'])
assert abs(a['test_accuracy'] - b['test_accuracy']) <= 0.002
'''


def test_sharded_loop_matches_one_device(checks):
  """The default training loop on 8 devices (jit + NamedSharding) reaches the
  same parameters and metrics as on 1 device."""
  assert 'acc' in checks('sharded_loop')


PER_DEVICE_SHARDS = '''
from mnist_jax import parallel
from mnist_jax.engine import trainer
from mnist_jax.parallel import shards
mesh = parallel.make_mesh()
n, b = 1003, 64                                  # M = 125 rows per device, 8 per step
idx = np.asarray(shards.permutation_fn(n, b, mesh)(jax.random.key(0)))
assert idx.shape == (15, 64), idx.shape      # ⌊M / b⌋ = ⌊125 / 8⌋ steps of B
for d in range(8):
  block = idx[:, 8 * d:8 * (d + 1)]
  assert block.min() >= 125 * d and block.max() < 125 * (d + 1), d
  assert len(np.unique(block)) == block.size
x = np.arange(1003 * 2).reshape(1003, 2); y = np.arange(1003)
lx, ly, m = shards.local_rows(x, y, mesh)
assert m == 125 and len(ly) == 1000                # one process: all 8 blocks
gx, gy = shards.place(lx, ly, m, mesh)
assert gx.sharding.spec == parallel.batch_sharded(mesh).spec
assert [s.data.shape for s in gy.addressable_shards] == [(125,)] * 8
bx, by = jax.jit(shards.gather_fn(mesh))(gx, gy, jnp.asarray(idx[3]))
np.testing.assert_array_equal(np.asarray(by), idx[3])
np.testing.assert_array_equal(np.asarray(bx), x[idx[3]])
c = defaults.get_config()
c.model.name = 'mlp'
c.data.source = 'idx'; c.data.data_dir = DATA; c.data.val_size = 1000
c.data.train_limit = 1024; c.data.per_device_shards = True; c.batch_size = 64
c.eval_batch_size = 200; c.num_epochs = 1; c.log_every_steps = 8; c.write_plots = False
s = trainer.train_and_evaluate(c, os.path.join(tmp, 'sharded')).summary
print('acc', s['test_accuracy'], s['train_images_in_process'])
assert s['train_images_in_process'] == 1024 and s['test_accuracy'] > 0.5
'''


def test_per_device_shards_each_device_reads_only_its_rows(checks):
  """data.per_device_shards: the training set is split into D blocks of
  M = ⌊N/D⌋ rows, device d samples only from block d, each row at most once
  an epoch; the loop trains with it (tests/parallel/test_multihost.py checks 2 x 4 == 1 x 8)."""
  assert 'acc' in checks('per_device_shards')


GROUP_OF_MODELS = '''
from mnist_jax.engine import stacked, trainer
from mnist_jax.search import hyper
c = defaults.get_config()
c.model.name = 'mlp'
c.data.source = 'idx'; c.data.data_dir = DATA; c.data.val_size = 1000
c.data.train_limit = 1024; c.data.per_device_shards = True; c.batch_size = 64
c.eval_batch_size = 200; c.num_epochs = 1; c.log_every_steps = 8; c.loop_mode = 'step'
configs = [hyper.apply(c, {'seed': s, 'learning_rate': lr}) for s, lr in ((0, 1e-3), (1, 3e-3))]
group = stacked.train(configs, [os.path.join(tmp, f'g{k}') for k in range(2)])
for k, cfg in enumerate(configs):
  alone = trainer.train_and_evaluate(cfg, os.path.join(tmp, f'a{k}')).summary
  got = group[k].summary
  print('model', k, got['test_loss'], alone['test_loss'], got['devices'])
  assert got['devices'].startswith('8 x') and got['train_images_in_process'] == 1024
  assert abs(got['test_loss'] - alone['test_loss']) < 1e-4, (got, alone)
'''


def test_a_group_of_models_uses_the_devices_and_shards_like_a_run(checks):
  """K = 2 models (other seeds: one data order each) on 8 devices with per-device
  shards and loop_mode='step': each equals its own K = 1 run with those settings
  (vectorized trials used to ignore num_devices, per_device_shards and loop_mode)."""
  assert checks('group_of_models').count('model') == 2


# every check, run together by the checks fixture
CHECKS = {'jit_and_shard_map': JIT_AND_SHARD_MAP, 'nnx_module': NNX_MODULE, 'pmap': PMAP,
          'sharded_loop': SHARDED_LOOP, 'per_device_shards': PER_DEVICE_SHARDS,
          'group_of_models': GROUP_OF_MODELS}
