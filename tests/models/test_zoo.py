"""The architecture zoo: shapes, parameter formulas, train/eval modes, learning.

Models are built small (tiny widths, few blocks) so the file runs in well under
a minute on 2 CPU cores; the structure (blocks, skips, concatenations) is the
same as in the default configs. They use the models' default layers, flax's
nn.Conv and nn.max_pool, whose programs compile faster than the CPU default's
fast layers (nn/fast_layers.py);
test_fast_layers_and_flax_primitives_are_one_function and ..._have_one_gradient check
that both compute the same logits and gradients.
"""
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen as nn

from mnist_jax import models
from mnist_jax.data import idx
from mnist_jax.models import alexnet, blocks, densenet, efficientnet, googlenet
from mnist_jax.models import lenet, resnet, vgg
from mnist_jax.nn import fast_layers, losses

TINY_STAGES = ((1, 16, 1, 1, 3), (6, 24, 2, 2, 3))   # B0's first two stages
SMALL = {
    'lenet5_modern': ('lenet5', dict(variant='modern')),
    'lenet5_classic': ('lenet5', dict(variant='classic', c3_table=True)),
    'alexnet': ('alexnet', dict(features=(4, 8, 8, 8, 8), dense_features=(16, 16))),
    'vgg': ('vgg', dict(plan='vgg11', width=1 / 16, dense_features=(16, 16),
                        batch_norm=True)),
    'googlenet': ('googlenet', dict(plan=('3a', 'M', '4a'), width=1 / 16,
                                    stem_features=8)),
    'resnet': ('resnet', dict(stage_sizes=(1, 1), widths=(4, 8), stem_features=4)),
    'resnet_bottleneck': ('resnet', dict(stage_sizes=(1, 1), widths=(2, 4),
                                         block='bottleneck', stem_features=4)),
    'densenet': ('densenet', dict(block_sizes=(2, 2), growth_rate=4)),
    'efficientnet': ('efficientnet', dict(width=0.25, stages=TINY_STAGES,
                                          head_features=64)),
}
RNGS = {'params': jax.random.key(0), 'dropout': jax.random.key(1)}
X = jax.random.uniform(jax.random.key(2), (4, 28, 28, 1))


def small(key, **overrides):
  name, kwargs = SMALL[key]
  return models.get_class(name)(**kwargs, **overrides)


def size(tree):
  return sum(x.size for x in jax.tree_util.tree_leaves(tree))


def init(module, x):
  """Variables without running the model (shapes only): for parameter counts."""
  return jax.eval_shape(functools.partial(module.init, train=False), RNGS, x)


@functools.lru_cache(maxsize=None)
def compiled(key, **overrides):
  """(model, variables, jitted eval apply, jitted train apply) for one small model."""
  model = small(key, **overrides)
  variables = jax.jit(functools.partial(model.init, train=False))(RNGS, X[:2])
  evaluate = jax.jit(lambda v, x: model.apply(v, x))
  train = jax.jit(lambda v, x, r: model.apply(v, x, train=True, rngs={'dropout': r},
                                              mutable=['batch_stats']))
  return model, variables, evaluate, train


@pytest.fixture(autouse=True)
def _fast_random_compiles():
  """Non-partitionable threefry: XLA:CPU compiles the parameter initializers of
  the (default) partitionable threefry ~10-20x slower (a minute for a model)."""
  with jax.threefry_partitionable(False):
    yield


@pytest.fixture(scope='module')
def batch(mnist_small_dir):
  """32 real MNIST images in [0, 1] and their labels."""
  images, labels = idx.load_split(mnist_small_dir, 'train')
  return jnp.asarray(images[:32], jnp.float32) / 255.0, jnp.asarray(labels[:32])


@pytest.mark.parametrize('key', list(SMALL))
def test_logits_shape_dtype_jit_and_bfloat16(key):
  model, variables, evaluate, _ = compiled(key)
  logits = evaluate(variables, X)                      # the forward under jax.jit
  assert logits.shape == (4, 10) and logits.dtype == jnp.float32
  assert bool(jnp.all(jnp.isfinite(logits)))
  low = jax.jit(model.clone(dtype=jnp.bfloat16).apply)(variables, X)
  assert low.dtype == jnp.float32 and low.shape == (4, 10)
  assert bool(jnp.all(jnp.isfinite(low)))
  assert float(jnp.max(jnp.abs(low - logits))) < 0.1 * float(jnp.max(jnp.abs(logits))) + 0.1


@pytest.mark.parametrize('key', list(SMALL))
def test_fast_layers_and_flax_primitives_are_one_function(key):
  """The CPU default's layers (models.layers_for('auto', 'cpu'): PatchConv and
  fast_layers.max_pool) and flax's nn.Conv and nn.max_pool are the same function of
  the same variables, in every layer of every model."""
  model, variables, evaluate, _ = compiled(key)
  fast = models.with_layers(model, 'auto', 'cpu')
  assert fast.conv is fast_layers.PatchConv
  np.testing.assert_allclose(jax.jit(fast.apply)(variables, X), evaluate(variables, X),
                             rtol=1e-4, atol=1e-5)


# Every layer kind between them: plain, masked and strided convs, 1x1 and
# pre-activation convs, non-overlapping, overlapping and padded max-pools.
GRAD_KEYS = ['lenet5_classic', 'lenet5_modern', 'alexnet', 'resnet', 'densenet',
             'efficientnet']


@pytest.mark.parametrize('key', GRAD_KEYS)
def test_fast_layers_and_flax_primitives_have_one_gradient(key):
  """... and the same gradient of the loss w.r.t. every parameter."""
  model, variables, _, _ = compiled(key)
  fast = models.with_layers(model, 'auto', 'cpu')
  targets = jax.nn.one_hot(jnp.arange(4), 10)
  grad = lambda m: jax.jit(jax.grad(lambda p: jnp.mean(losses.get('cce')(
      m.apply({**variables, 'params': p}, X), targets))))(variables['params'])
  for a, b in zip(jax.tree_util.tree_leaves(grad(fast)), jax.tree_util.tree_leaves(grad(model))):
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize('key', list(SMALL))
def test_explainer_counts_every_parameter(key):
  """The explainer's per-layer rows add up to the variables' sizes."""
  from mnist_jax.inspection import explain  # pylint: disable=g-import-not-at-top
  model = small(key)
  variables = init(model, jnp.zeros((1, 28, 28, 1)))
  rows = explain.explain(model, (1, 28, 28, 1), variables)
  assert not [r for r in rows if r.name == '(other)']
  assert sum(r.params for r in rows) == size(variables['params']) > 0


def test_lenet5_modern_parameter_count():
  variables = init(small('lenet5_modern'), jnp.zeros((1, 28, 28, 1)))
  # C1 5·5·1·6+6, C3 5·5·6·16+16, C5 400·120+120, F6 120·84+84, out 84·10+10
  assert size(variables['params']) == 156 + 2416 + 48120 + 10164 + 850 == 61706


def test_lenet5_classic_c3_table_trains_only_the_papers_connections():
  """Masked C3 weights get zero gradient: 60 connections·25 + 16 = 1,516 learn (Table I)."""
  model, variables, _, _ = compiled('lenet5_classic')
  grads = jax.jit(jax.grad(lambda p: jnp.sum(model.apply({'params': p}, X) ** 2)))(
      variables['params'])
  g = np.asarray(grads['C3']['kernel'])                       # (5, 5, 6, 16)
  table = lenet.C3_TABLE.astype(bool)
  assert np.all(g[:, :, ~table] == 0) and np.all(np.abs(g[:, :, table]).sum((0, 1)) > 0)
  assert int(table.sum()) * 25 + 16 == 1516


def test_alexnet_parameters_and_local_response_norm():
  f, h = (4, 8, 8, 8, 8), (16, 16)
  variables = init(small('alexnet'), jnp.zeros((1, 28, 28, 1)))
  convs = sum(k * k * c * o + o for k, c, o in zip((7, 5, 3, 3, 3), (1,) + f[:-1], f))
  fcs = (4 * f[4] * h[0] + h[0]) + (h[0] * h[1] + h[1]) + (h[1] * 10 + 10)
  assert size(variables['params']) == convs + fcs       # 2x2xF5 -> FC6
  a = jax.random.normal(jax.random.key(0), (2, 3, 3, 7))
  i = 3                                                 # b_i = a_i/(k+α Σ a_j²)^β
  expect = a[..., i] / (2.0 + 1e-4 * jnp.sum(a[..., 1:6] ** 2, -1)) ** 0.75
  np.testing.assert_allclose(alexnet.local_response_norm(a)[..., i], expect, rtol=1e-5)


def test_vgg_plan_parameters_and_only_3x3_kernels():
  model = vgg.VGG(plan=(4, 'M', 8, 8, 'M'), width=1.0, dense_features=(16,),
                  batch_norm=False)
  variables = init(model, jnp.zeros((1, 28, 28, 1)))
  kernels = [p for path, p in jax.tree_util.tree_leaves_with_path(variables['params'])
             if 'conv' in jax.tree_util.keystr(path) and p.ndim == 4]
  assert all(k.shape[:2] == (3, 3) for k in kernels) and len(kernels) == 3
  convs = (9 * 1 * 4 + 4) + (9 * 4 * 8 + 8) + (9 * 8 * 8 + 8)
  assert size(variables['params']) == convs + (7 * 7 * 8 * 16 + 16) + (16 * 10 + 10)
  assert vgg.resolve_plan('vgg16', 0.125).count('M') == 5
  assert sum(v != 'M' for v in vgg.resolve_plan('vgg16')) == 13


def shape_of(module, variables, x):
  return jax.eval_shape(module.apply, variables, x).shape


def test_inception_branches_concatenate_and_parameter_formula():
  c, (c1, c3r, c3, c5r, c5, pp) = 6, (2, 3, 4, 1, 2, 3)
  module = googlenet.Inception(c1, c3r, c3, c5r, c5, pp)
  x = jnp.ones((1, 7, 7, c))
  variables = init(module, x)
  assert shape_of(module, variables, x) == (1, 7, 7, c1 + c3 + c5 + pp)
  expect = (c * c1 + c1) + (c * c3r + c3r) + (9 * c3r * c3 + c3) + (c * c5r + c5r) \
      + (25 * c5r * c5 + c5) + (c * pp + pp)
  assert size(variables['params']) == expect


def test_residual_blocks_parameter_formulas_and_skip():
  c = 8
  block = resnet.BasicBlock(c)
  x = jax.random.normal(jax.random.key(0), (2, 5, 5, c))
  variables = block.init(RNGS, x)
  assert size(variables['params']) == 18 * c * c + 4 * c      # 2·(9C²) + 2 BN (γ, β)
  # The last BN's γ starts at 0, so F(x) = 0 and y = relu(F(x) + x) = relu(x).
  np.testing.assert_allclose(block.apply(variables, x), jax.nn.relu(x), atol=1e-6)
  cin, f = 4, 6                                               # projection skip
  proj = resnet.BasicBlock(f, strides=2)
  pv = init(proj, jnp.zeros((1, 6, 6, cin)))
  assert shape_of(proj, pv, jnp.zeros((1, 6, 6, cin))) == (1, 3, 3, f)
  assert size(pv['params']) == 9 * cin * f + 9 * f * f + 4 * f + (cin * f + 2 * f)
  bottle = init(resnet.BottleneckBlock(f), jnp.zeros((1, 6, 6, 4 * f)))
  assert size(bottle['params']) == 4 * f * f + 9 * f * f + 4 * f * f + 2 * f + 2 * f + 8 * f


def test_dense_layer_adds_k_maps_and_transition_compresses():
  c, k = 10, 4
  layer = densenet.DenseLayer(k)
  x = jax.random.normal(jax.random.key(0), (2, 6, 6, c))
  variables = layer.init(RNGS, x)
  y = layer.apply(variables, x)
  assert y.shape == (2, 6, 6, c + k)
  np.testing.assert_array_equal(y[..., :c], x)                # x_l = [x, H_l(x)]
  assert size(variables['params']) == 2 * c + 4 * k * c + 2 * 4 * k + 9 * 4 * k * k
  trans = densenet.Transition(0.5)
  tv = init(trans, y)
  assert shape_of(trans, tv, y) == (2, 3, 3, (c + k) // 2)  # floor(θC), W/2
  assert size(tv['params']) == 2 * (c + k) + (c + k) * ((c + k) // 2)


def test_mbconv_squeeze_excite_and_depthwise_parameters():
  c, t, k, r = 8, 6, 5, 2                                     # r = int(C·0.25)
  block = efficientnet.MBConv(c, t, k)
  x = jax.random.normal(jax.random.key(0), (2, 7, 7, c))
  variables = init(block, x)
  p = variables['params']
  assert size(p['se']) == c * t * r + r + r * c * t + c * t
  assert p['depthwise']['conv']['kernel'].shape == (k, k, 1, c * t)
  expect = (c * c * t + 2 * c * t) + (k * k * c * t + 2 * c * t) + size(p['se']) \
      + (c * t * c + 2 * c)
  assert size(p) == expect
  assert shape_of(block, variables, x) == x.shape
  # The shifted-slice depthwise conv equals XLA's grouped convolution.
  w = jax.random.normal(jax.random.key(3), (3, 3, 1, c))
  for s in (1, 2):
    got = blocks.DepthwiseConv(3, s).apply({'params': {'kernel': w}}, x)
    ref = jax.lax.conv_general_dilated(x, w, (s, s), [(1, 1), (1, 1)],
                                       dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
                                       feature_group_count=c)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_efficientnet_compound_scaling_numbers():
  assert efficientnet.compound_scaling(0) == (1.0, 1.0, 1.0)
  d, w, r = efficientnet.compound_scaling(1)
  assert (d, w, r) == pytest.approx((1.2, 1.1, 1.15))
  assert 1.9 < 1.2 * 1.1 ** 2 * 1.15 ** 2 < 2.0               # α·β²·γ² ≈ 2
  assert (efficientnet.resolution(0), efficientnet.resolution(1)) == (28, 32)
  repeats = [efficientnet.round_repeats(s[2], d) for s in efficientnet.B0_STAGES]
  assert repeats == [2, 3, 3, 4, 4, 5, 2]                     # ceil(1.2 n)
  assert efficientnet.round_filters(40, 1.1) == 48            # 44 -> multiple of 8
  assert efficientnet.round_filters(32, 0.25) == 8
  x = jnp.zeros((1, 28, 28, 1))
  for phi, side in ((0, 14), (1, 16)):                        # stem stride 2: 28/2, 32/2
    model = small('efficientnet', phi=phi)
    variables = init(model, x)
    _, state = jax.eval_shape(functools.partial(
        model.apply, capture_intermediates=True, mutable=['intermediates']), variables, x)
    assert state['intermediates']['stem']['__call__'][0].shape[1:3] == (side, side)
    stage_blocks = [n for n in variables['params'] if n.startswith('stage')]
    assert len(stage_blocks) == sum(math.ceil(n * 1.2 ** phi) for _, _, n, _, _ in TINY_STAGES)
  # width w = β^φ: the head conv has 64·0.25 = 16 (B0) and 64·0.25·1.1 = 17.6 -> 18 (B1)
  b0, b1 = (init(small('efficientnet', phi=phi, channel_divisor=1), x) for phi in (0, 1))
  assert b0['params']['head_conv']['conv']['kernel'].shape[-1] == 16
  assert b1['params']['head_conv']['conv']['kernel'].shape[-1] == 18


DROPOUT_KEYS = ['alexnet', 'vgg', 'googlenet', 'efficientnet']
BN_KEYS = ['vgg', 'googlenet', 'resnet', 'densenet', 'efficientnet']


@pytest.mark.parametrize('key', DROPOUT_KEYS)
def test_dropout_train_is_random_eval_is_deterministic(key):
  _, variables, evaluate, train = compiled(key)               # dropout_rate > 0
  out = [train(variables, X, jax.random.key(seed))[0] for seed in (1, 2, 1)]
  assert not np.allclose(out[0], out[1])
  np.testing.assert_array_equal(out[0], out[2])
  np.testing.assert_array_equal(evaluate(variables, X), evaluate(variables, X))


@pytest.mark.parametrize('k,s,p,w', [(3, 1, 1, 14), (3, 2, 'VALID', 13), (2, 2, 'SAME', 7),
                                     (3, 2, 1, 7), (2, 2, 0, 28), (2, None, 'VALID', 7)])
def test_max_pool_equals_flax(k, s, p, w):
  """fast_layers.max_pool is nn.max_pool's call (strides None: stride 1) and values."""
  x = jax.random.normal(jax.random.key(0), (2, w, w, 3))
  pad = p if isinstance(p, str) else ((p, p), (p, p))
  strides = None if s is None else (s, s)
  ref = nn.max_pool(x, (k, k), strides=strides, padding=pad)
  got = fast_layers.max_pool(x, (k, k), strides=strides, padding=pad)
  np.testing.assert_array_equal(got, ref)
  if isinstance(p, int):
    assert got.shape[1] == blocks.conv_output_size(w, k, s, p)  # (W - K + 2P)/S + 1



def test_max_pool_gradient_is_nn_max_pools_ties_included():
  # fast_layers.max_pool's gradient (S = K) is flax's reduce_window gradient: each
  # window's ∂L/∂y goes to one element, the first maximum, also where the maximum
  # is tied (here: small integers; on MNIST, the empty background).
  x = jax.random.randint(jax.random.key(0), (2, 9, 9, 3), 0, 3).astype(jnp.float32)
  g = jax.random.normal(jax.random.key(1), (2, 4, 4, 3))    # 9: a cropped border too
  loss = lambda pool: lambda x: jnp.sum(pool(x) * g)
  ours = jax.grad(loss(lambda x: fast_layers.max_pool(x, (2, 2), strides=(2, 2))))(x)
  ref = jax.grad(loss(lambda x: nn.max_pool(x, (2, 2), strides=(2, 2))))(x)
  windows = x[:, :8, :8].reshape(2, 4, 2, 4, 2, 3)
  assert int(jnp.sum(windows == windows.max(axis=(2, 4), keepdims=True))) > g.size  # ties
  np.testing.assert_array_equal(ours, ref)
  assert int(jnp.sum(ours != 0)) == g.size            # one element per window


def test_stochastic_depth_drops_whole_examples():
  x = jnp.ones((64, 2, 2, 3))
  y = blocks.DropPath(0.5).apply({}, x, train=True, rngs={'dropout': jax.random.key(0)})
  per_example = np.unique(np.asarray(y).reshape(64, -1), axis=1)
  assert per_example.shape[1] == 1 and set(np.unique(per_example)) == {0.0, 2.0}
  np.testing.assert_array_equal(blocks.DropPath(0.5).apply({}, x, train=False), x)


@pytest.mark.parametrize('key', BN_KEYS)
def test_batch_norm_updates_stats_in_train_and_eval_uses_them(key):
  # γ = 0 residual inits make some BN inputs exactly constant at init (mean 0).
  zero_init = 'zero_init_residual' in models.fields(type(small(key)))
  _, variables, evaluate, train = compiled(key, **({'zero_init_residual': False}
                                                   if zero_init else {}))
  _, new = train(variables, X, jax.random.key(0))
  old_stats, new_stats = variables['batch_stats'], new['batch_stats']
  assert jax.tree_util.tree_structure(old_stats) == jax.tree_util.tree_structure(new_stats)
  # Bitwise: a BN fed by a train-mode BN (+ 1x1 conv) sees batch means ~1e-9 by
  # construction, so its running mean moves by float noise only.
  changed = jax.tree_util.tree_map(lambda a, b: not np.array_equal(a, b), old_stats,
                                   new_stats)
  assert all(jax.tree_util.tree_leaves(changed))
  updated = {**variables, 'batch_stats': new_stats}
  assert not np.allclose(evaluate(variables, X), evaluate(updated, X))
  np.testing.assert_array_equal(evaluate(updated, X), evaluate(updated, X))


@pytest.mark.parametrize('key', [k for k in SMALL if k != 'resnet_bottleneck'])
def test_training_steps_lower_the_loss_on_a_real_batch(key, batch):
  """Five Adam steps on one real batch of 32 lower its CCE (same dropout mask)."""
  images, labels = batch
  model, variables, _, _ = compiled(key)
  targets = jax.nn.one_hot(labels, 10)
  tx = optax.adam(3e-3)
  rng = jax.random.key(5)

  def loss_fn(params, stats):
    out, new = model.apply({'params': params, **stats}, images, train=True,
                           rngs={'dropout': rng}, mutable=['batch_stats'])
    return jnp.mean(losses.categorical_cross_entropy(out, targets)), new

  @jax.jit
  def step(params, stats, opt_state):
    (loss, new), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, stats)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), new, opt_state, loss

  params = variables['params']
  stats = {k: v for k, v in variables.items() if k == 'batch_stats'}
  opt_state = jax.jit(tx.init)(params)
  history = []
  for _ in range(6):                          # the 6th loss is after 5 updates
    params, stats, opt_state, loss = step(params, stats, opt_state)
    history.append(float(loss))
  assert np.isfinite(history).all() and history[-1] < history[0], (key, history)
