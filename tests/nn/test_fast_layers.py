"""Correctness of the speed work: the patches conv, SpeedNet, the naive loop and
the benchmark's parsing. No timings are asserted anywhere."""
import importlib.util
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import linen as nn

from mnist_jax import models, train
from mnist_jax.config import files as config_files
from mnist_jax.data import pipeline
from mnist_jax.errors import UserError
from mnist_jax.models.lenet import LeNet5
from mnist_jax.models.speednet import SpeedNet
from mnist_jax.nn import fast_layers

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _load(group, name):
  path = os.path.join(ROOT, 'experiments', group, f'{name}.py')
  spec = importlib.util.spec_from_file_location(f'{group}_{name}', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.mark.parametrize('k, s, p', [(5, 1, 2), (5, 1, 'VALID'), (3, 1, 'SAME'),
                                     (3, 2, 'SAME'), (4, 2, 'SAME'), (3, 2, 1),
                                     (1, 1, 'SAME'), (2, 3, ((1, 0), (0, 2)))])
def test_patch_conv_equals_nn_conv(k, s, p):
  x = jax.random.normal(jax.random.key(0), (2, 13, 11, 3))
  ref = nn.Conv(4, (k, k), strides=s, padding=p)
  fast = fast_layers.PatchConv(4, (k, k), strides=s, padding=p)
  variables = jax.jit(ref.init)(jax.random.key(1), x)
  # Same parameter names, shapes and initial values (same initializers).
  fast_vars = jax.jit(fast.init)(jax.random.key(1), x)
  assert jax.tree_util.tree_structure(fast_vars) == jax.tree_util.tree_structure(variables)
  np.testing.assert_array_equal(fast_vars['params']['kernel'], variables['params']['kernel'])
  y_ref, y_fast = jax.jit(ref.apply)(variables, x), jax.jit(fast.apply)(variables, x)
  assert y_fast.shape == y_ref.shape
  np.testing.assert_allclose(y_fast, y_ref, atol=1e-5)
  # Gradients w.r.t. the parameters and the input agree as well.
  loss = lambda m: (lambda v, x: jnp.sum(jnp.sin(m.apply(v, x))))
  g_ref = jax.jit(jax.grad(loss(ref), argnums=(0, 1)))(variables, x)
  g_fast = jax.jit(jax.grad(loss(fast), argnums=(0, 1)))(variables, x)
  for a, b in zip(jax.tree_util.tree_leaves(g_fast), jax.tree_util.tree_leaves(g_ref)):
    np.testing.assert_allclose(a, b, atol=1e-4)


@pytest.mark.parametrize('c, k, p, bias', [(16, 3, 1, False), (9, 3, 'SAME', True),
                                           (16, 5, 'VALID', True), (12, 2, ((1, 0), (0, 2)), False),
                                           (1, 3, 1, False)])   # 1 channel: XLA's own dW
def test_shift_conv_is_nn_conv_with_the_kernel_gradient_as_shifted_products(c, k, p, bias):
  """conv_impl='shift': nn.Conv's variables, outputs and gradients (w.r.t. the
  kernel, the bias and the input), the kernel's as K·K shifted matrix products."""
  x = jax.random.normal(jax.random.key(0), (3, 10, 9, c))
  ref = nn.Conv(7, (k, k), padding=p, use_bias=bias)
  fast = fast_layers.ShiftConv(7, (k, k), padding=p, use_bias=bias)
  variables = jax.jit(ref.init)(jax.random.key(1), x)
  assert (jax.tree_util.tree_structure(jax.jit(fast.init)(jax.random.key(1), x))
          == jax.tree_util.tree_structure(variables))
  np.testing.assert_allclose(jax.jit(fast.apply)(variables, x), jax.jit(ref.apply)(variables, x),
                             atol=1e-5)
  loss = lambda m: (lambda v, x: jnp.sum(jnp.sin(m.apply(v, x))))
  g_ref = jax.jit(jax.grad(loss(ref), argnums=(0, 1)))(variables, x)
  g_fast = jax.jit(jax.grad(loss(fast), argnums=(0, 1)))(variables, x)
  for a, b in zip(jax.tree_util.tree_leaves(g_fast), jax.tree_util.tree_leaves(g_ref)):
    np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4)
  # dW by hand for one kernel tap: Σ_{n,i,j} x_pad[n, i+u, j+v, c] · dFM[n, i, j, f]
  pads = fast_layers.explicit_padding(p, x.shape[1:3], (k, k), (1, 1))
  dy = jax.random.normal(jax.random.key(2), ref.apply(variables, x).shape)
  _, vjp = jax.vjp(lambda w: fast_layers.shift_conv2d(x, w, pads), variables['params']['kernel'])
  xp = np.pad(np.asarray(x), ((0, 0),) + pads + ((0, 0),))
  h, w = dy.shape[1:3]
  by_hand = np.einsum('nijc,nijf->cf', xp[:, 1:1 + h, 0:w], np.asarray(dy))
  np.testing.assert_allclose(vjp(dy)[0][1, 0], by_hand, atol=1e-3, rtol=1e-4)


def test_shift_conv_refuses_strides():
  with pytest.raises(UserError, match="conv_impl='shift' supports stride 1 only"):
    fast_layers.ShiftConv(4, (3, 3), strides=2).init(jax.random.key(0), jnp.zeros((1, 8, 8, 2)))


def test_patch_conv_refuses_what_it_does_not_compute():
  x = jnp.zeros((1, 8, 8, 4))
  for kwargs in ({'kernel_dilation': 2}, {'feature_group_count': 2}):
    with pytest.raises(ValueError, match='use nn.Conv for this layer'):
      fast_layers.PatchConv(4, (3, 3), **kwargs).init(jax.random.key(0), x)
  with pytest.raises(ValueError, match='2-D convolutions'):   # an int kernel: nn.Conv's 1-D
    fast_layers.PatchConv(4, 3).init(jax.random.key(0), x)


@pytest.mark.parametrize('impl', ['patches', 'shift'])
def test_patch_and_shift_conv_mask_and_no_bias(impl):
  x = jax.random.normal(jax.random.key(0), (1, 8, 8, 2))
  mask = jnp.zeros((3, 3, 2, 5)).at[:, :, 0, :].set(1.0)
  ref = nn.Conv(5, (3, 3), use_bias=False, mask=mask)
  fast = models.CONV_IMPLS[impl](5, (3, 3), use_bias=False, mask=mask)
  variables = jax.jit(ref.init)(jax.random.key(1), x)
  assert 'bias' not in variables['params']
  np.testing.assert_allclose(jax.jit(fast.apply)(variables, x), jax.jit(ref.apply)(variables, x),
                             atol=1e-5)


def test_same_padding_rule_matches_lax():
  for size, k, s in [(28, 5, 1), (13, 3, 2), (14, 4, 2), (7, 1, 3)]:
    ours = fast_layers.explicit_padding('SAME', (size, size), (k, k), (s, s))
    ref = jax.lax.padtype_to_pads((size, size), (k, k), (s, s), 'SAME')
    assert [tuple(p) for p in ours] == [tuple(p) for p in ref]


def test_extract_patches_layout():
  x = jnp.arange(16.0).reshape(1, 4, 4, 1)
  patches = fast_layers.extract_patches(x, (2, 2))       # VALID, stride 1
  assert patches.shape == (1, 3, 3, 4)
  np.testing.assert_array_equal(patches[0, 1, 2], [6.0, 7.0, 10.0, 11.0])  # (u, v, c) order


def test_unknown_conv_impl_is_a_user_error():
  with pytest.raises(UserError, match='conv_impl'):
    models.layers_for('winograd', 'cpu')
  with pytest.raises(UserError, match="model 'mlp' has no option conv_impl"):
    models.build(ml_collections.ConfigDict({'name': 'mlp', 'conv_impl': 'xla'}))


def test_layers_follow_conv_impl_and_the_platform():
  fast = {'conv': fast_layers.PatchConv, 'max_pool': fast_layers.max_pool}
  assert models.layers_for('auto', 'cpu') == fast
  assert models.layers_for('auto', 'gpu') == {'conv': nn.Conv, 'max_pool': nn.max_pool}
  assert models.layers_for('xla', 'cpu') == {**fast, 'conv': nn.Conv}
  assert models.layers_for('shift', 'tpu') == {'conv': fast_layers.ShiftConv,
                                              'max_pool': nn.max_pool}
  # build: the config's conv_impl on this platform (the tests run on CPU); a model
  # without a max-pool takes the conv alone; conv_impl is an option, not a field.
  lenet = models.build(ml_collections.ConfigDict({'name': 'lenet5'}))
  assert (lenet.conv, lenet.max_pool) == (fast_layers.PatchConv, fast_layers.max_pool)
  effnet = models.build(ml_collections.ConfigDict({'name': 'efficientnet', 'conv_impl': 'xla'}))
  assert effnet.conv is nn.Conv and 'max_pool' not in models.fields(type(effnet))
  assert 'conv_impl' in models.options(LeNet5) and 'conv' not in models.options(LeNet5)
  assert 'conv_impl' not in models.options(models.get_class('mlp'))
  # K models under vmap: patches on every platform, the platform's max-pool.
  vmapped = models.vmapped(LeNet5())
  assert (vmapped.conv, vmapped.max_pool) == (fast_layers.PatchConv, fast_layers.max_pool)


@pytest.mark.parametrize('impl, c3_table', [('patches', False), ('patches', True),
                                            ('shift', False)])
def test_lenet_same_variables_same_outputs_and_gradients_with_either_layers(impl, c3_table):
  """LeNet-5 with nn.Conv + nn.max_pool and with the fast layers of ``impl``: the same
  parameter tree, and on the same variables the same logits and gradients (train
  mode, same dropout key), so a checkpoint moves between implementations. The
  input is a digit-like blob on an empty background and the biases are positive, as
  after training: every window on the background holds one value, a tied maximum."""
  blob = jax.random.uniform(jax.random.key(0), (3, 12, 12, 1))
  x = jnp.zeros((3, 28, 28, 1)).at[:, 8:20, 8:20].set(blob)
  ref = LeNet5(c3_table=c3_table, dropout_rate=0.25)
  fast = ref.clone(**models.layers_for(impl, 'cpu'))
  assert (fast.conv, fast.max_pool) != (ref.conv, ref.max_pool)
  variables = jax.jit(ref.init)(jax.random.key(1), x)
  fast_vars = jax.jit(fast.init)(jax.random.key(1), x)
  assert jax.tree_util.tree_structure(fast_vars) == jax.tree_util.tree_structure(variables)
  for a, b in zip(jax.tree_util.tree_leaves(fast_vars), jax.tree_util.tree_leaves(variables)):
    np.testing.assert_array_equal(a, b)          # same initializers, same values
  variables = jax.tree_util.tree_map_with_path(
      lambda path, v: v + 0.1 if jax.tree_util.keystr(path).endswith("['bias']") else v,
      variables)
  np.testing.assert_allclose(jax.jit(fast.apply)(variables, x), jax.jit(ref.apply)(variables, x),
                             atol=1e-5)
  loss = lambda m: jax.jit(jax.grad(lambda v: jnp.sum(jnp.sin(m.apply(
      v, x, train=True, rngs={'dropout': jax.random.key(2)})))))
  for a, b in zip(jax.tree_util.tree_leaves(loss(fast)(variables)),
                  jax.tree_util.tree_leaves(loss(ref)(variables))):
    np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize('k', [2, 3])
def test_non_overlapping_max_pool_equals_nn_max_pool(k):
  """fast_layers.max_pool with S = K (reshape + max): nn.max_pool's values and gradient."""
  x = jax.random.normal(jax.random.key(0), (2, 11, 10, 3))   # sizes not divisible: floor
  ref = lambda x: nn.max_pool(x, (k, k), strides=(k, k))
  ours = lambda x: fast_layers.max_pool(x, (k, k), strides=(k, k))
  assert ours(x).shape == (2, 11 // k, 10 // k, 3)
  np.testing.assert_array_equal(ours(x), ref(x))
  g_ref = jax.grad(lambda x: jnp.sum(ref(x) ** 2))(x)         # no ties in random floats
  np.testing.assert_allclose(jax.grad(lambda x: jnp.sum(ours(x) ** 2))(x), g_ref)


# Run in a fresh process: the XLA flags are read once, when JAX starts.
_POOL_GRADIENT = """
import jax, jax.numpy as jnp, numpy as np
from flax import linen as nn
from mnist_jax.data import idx, preprocess
from mnist_jax.models.cnn import CNN
from mnist_jax.nn import fast_layers
images, labels = idx.load_split('tests/fixtures/mnist_small', 'train')
x, y = preprocess.normalize(jnp.asarray(images[:64])), jnp.asarray(labels[:64])
def grad(pool):
  model = CNN(features=(8,), max_pool=pool)
  v = model.init(jax.random.key(0), x[:2])
  def loss(p):
    logits, _ = model.apply({**v, 'params': p}, x, train=True, mutable=['batch_stats'])
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], 1))
  return jax.jit(jax.grad(loss))(v['params'])
for a, b in zip(jax.tree_util.tree_leaves(grad(fast_layers.max_pool)),
                jax.tree_util.tree_leaves(grad(nn.max_pool))):
  np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
"""


def test_max_pool_gradient_holds_when_xla_computes_the_pooled_input_twice(cpu_devices_env):
  """The max-pool's ∂L/∂y reaches each window whatever XLA's rounding: with LLVM at
  -O0 and XLA:CPU's older loop emitters, the batch-normalized input of the pool is
  computed once for the forward max and again, a rounding apart, for the backward
  pass, where an equality test of the two can find no maximum in a window and drop
  its gradient: the CNN's gradient must still be nn.max_pool's."""
  env = cpu_devices_env(1)
  env['XLA_FLAGS'] += ' --xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false'
  out = subprocess.run([sys.executable, '-c', _POOL_GRADIENT], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]


def test_speednet_contract_and_impls_agree():
  model = models.build(ml_collections.ConfigDict({'name': 'speednet', 'conv_impl': 'xla'}))
  assert isinstance(model, SpeedNet) and model.conv is nn.Conv
  x = jax.random.uniform(jax.random.key(0), (4, 28, 28, 1))
  variables = jax.jit(model.init)(jax.random.key(1), x)
  assert set(variables) == {'params', 'batch_stats'}
  logits = model.apply(variables, x)
  assert logits.shape == (4, 10) and logits.dtype == jnp.float32
  fast = model.clone(conv=fast_layers.PatchConv)
  np.testing.assert_allclose(fast.apply(variables, x), logits, atol=1e-4)
  out, updates = fast.apply(variables, x, train=True, mutable=['batch_stats'])
  assert out.shape == (4, 10) and 'batch_stats' in updates


def test_speedrun_config_trains_a_step():
  config = _load_config()
  state = train.create_train_state(config, jax.random.key(0), num_train=55_000)
  assert state.model.conv is nn.Conv and config.loop_mode == 'step'
  batch = {'image': jnp.ones((8, 28, 28, 1)) * 0.5, 'label': jnp.arange(8) % 10}
  new_state, metrics = jax.jit(train.train_step)(state, batch, jax.random.key(1))
  assert np.isfinite(float(metrics['loss'])) and int(new_state.step) == 1


def _load_config():
  return config_files.load(os.path.join(ROOT, 'configs', 'speedrun.py'))


def test_naive_loop_epoch_and_eval(small_config):
  naive = _load('speed', 'naive_loop')
  small_config.data.train_limit, small_config.log_every_steps = 500, 4
  data = pipeline.load(small_config.data)
  state = train.create_train_state(small_config, jax.random.key(0), num_train=500)
  record = naive.train_epoch(small_config, 1, state, jax.jit(train.train_step), data,
                             jax.random.key(1))
  assert int(record['state'].step) == 500 // small_config.batch_size
  assert record['train_loss'] > 0 and 0 <= record['train_accuracy'] <= 1
  result = naive.evaluate(record['state'], jax.jit(train.eval_step), data.test_images,
                          data.test_labels, 300)                  # 1000 = 3 x 300 + 100
  sums = train.eval_step(record['state'], naive.host_batch(
      data.test_images, data.test_labels, np.arange(1000)))
  assert result['accuracy'] == pytest.approx(float(sums['correct']) / 1000)


def test_benchmark_parsing_and_peak():
  bench = _load('speed', 'benchmark')
  line = 'W1125 dispatch.py:183] Finished XLA compilation of jit(run) in 2.5e-01 sec'
  assert float(bench.COMPILE_RE.search(line).group(1)) == 0.25
  assert bench.COMPILE_RE.search('Finished tracing + transforming f for pjit in 0.5 sec')
  assert bench.PROGRESS_RE.search('epoch 1: 143/429 steps (33%), loss 0.3').groups() == (
      '1', '143', '429')
  assert bench.EPOCH_RE.search('epoch 2/3: train loss 0.1').group(1) == '2'
  assert not bench.EPOCH_RE.search('epoch 1: 143/429 steps')
  torch_line = 'epoch 1: test accuracy 99.09 %, train 13.7 s (4395 images/s), 19.0 s since start'
  assert bench.REFERENCE_RE.search(torch_line).groups() == ('1', '99.09')
  assert bench.REFERENCE_RATE_RE.search(torch_line).group(1) == '4395'
  peak = bench.cpu_peak(fma_per_cycle=32)
  cores = len(os.sched_getaffinity(0))
  assert peak['fp32'] > 0 and f'{cores} cores x 32 fp32 FMA/cycle' in peak['how']
  config = bench.load_config('configs/speedrun.py', ['batch_size=64', 'data.source=idx'])
  assert config.batch_size == 64 and config.data.source == 'idx'


def test_benchmark_replaces_a_measurement_of_the_same_thing_on_the_same_machine(tmp_path):
  bench = _load('speed', 'benchmark')
  out = str(tmp_path / 'bench.md')
  def section(config, cpu, figure):
    return f'### {config}  — 2026-01-0{figure}\n\n- backend: cpu; peak: {cpu}: 2 cores\n\n| {figure} |'
  with open(out, 'w') as f:
    f.write('# Benchmarks\n\nWhat the file holds.\n')
  bench.write_section(out, section('configs/speedrun.py', 'AMD EPYC (family 25)', 1))
  bench.write_section(out, section('configs/speedrun.py', 'Intel Xeon (family 6)', 2))
  bench.write_section(out, section('configs/speedrun.py', 'AMD EPYC (family 25)', 3))
  text = open(out).read()
  assert text.startswith('# Benchmarks\n\nWhat the file holds.\n\n### ')
  assert text.count('### ') == 2 and '| 1 |' not in text   # the old figure is gone
  assert text.index('| 2 |') < text.index('| 3 |')


def test_benchmark_profile_categories_and_table():
  bench = _load('speed', 'benchmark')
  stack = 'jit(run)/while/body/closed_call/'
  assert bench._category(stack + 'transpose(jvp(SpeedNet))/conv_1/dot_general') == (
      'conv_1: backward')
  assert bench._category(stack + 'jvp(LeNet5)/C1/concatenate') == 'C1: forward'
  assert bench._category(stack + 'jvp(SpeedNet)/reduce_max') == 'max-pool: forward'
  assert bench._category(stack + 'jvp(SpeedNet)/jit(relu)/max') == 'relu: forward'
  assert bench._category(stack + 'mul') == 'loss, optimizer, batch gather'
  run = {'time_to_target': 20.0, 'epoch': 1, 'test_accuracy': 0.991, 'compile_s': 5.0,
         'startup_s': 3.0, 'images_per_s': 1000.0, 'cores_used': 1.0, 'load': 0.5,
         'wall_s': 21.0, 'phases': {'imports': 1.0, 'data': 0.5, 'setup': 1.5, 'train': 15.0,
                                    'eval': 0.5}}
  slow = dict(run, time_to_target=40.0, images_per_s=500.0)
  torch_run = dict(run, time_to_target=10.0, compile_s=None, phases={})
  text = bench.table({'scan': [run, run], 'naive': [slow, dict(slow, time_to_target=None)],
                      'torch_record': [torch_run]},
                     {'train_flops': 1e7}, {'fp32': 100.0}, 0.99)
  assert '| scan | 1.00 | 0.50 | 1.50 | 15.00 | 0.50 | 5.00 |' in text   # the phases
  assert 'scan / torch_record, median time to target: 20.0 s / 10.0 s = 2.00x' in text
  assert '| scan | 20.0 [20.0–20.0]  | 1 | 0.9910 |' in text
  assert '1/2 runs' in text                          # one naive run never reached 99 %
  assert '| 10.0 | 10.0 |' in text                   # 1000 img/s x 10 MFLOP = 10 GFLOP/s = 10 %
  assert 'time to target: 2.00x' in text and 'steady images/s: 2.00x' in text


def test_fashion_mnist_idx_splits_each_class_at_its_end(tmp_path):
  """experiments/data/fashion_mnist_idx.py: the last N images of every class are the
  test split, empty entries are dropped, and the IDX files read back as written."""
  import json  # pylint: disable=g-import-not-at-top
  from mnist_jax.data import idx  # pylint: disable=g-import-not-at-top
  clothes = tmp_path / 'package' / 'src' / 'clothes'
  clothes.mkdir(parents=True)
  for label in range(10):  # image i of class c: every pixel 10·c + i
    rows = [[10 * label + i] * 784 for i in range(5)] + ([[]] if label == 0 else [])
    (clothes / f'{label}.json').write_text(json.dumps({'data': rows}))
  module = _load('data', 'fashion_mnist_idx')
  written = module.convert(str(tmp_path / 'package'), str(tmp_path / 'out'), test_per_class=2)
  for split, per_class in (('train', (0, 1, 2)), ('test', (3, 4))):
    images, labels = idx.load_split(str(tmp_path / 'out'), split, name='fashion_mnist')
    assert np.array_equal(images[..., 0], written[split][0])
    assert sorted(np.unique(images[:, 0, 0, 0]).tolist()) == sorted(
        10 * c + i for c in range(10) for i in per_class)
    assert np.array_equal(images[:, 0, 0, 0] // 10, labels)
