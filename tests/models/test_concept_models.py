"""Perceptron, MLP and CNN: shapes, parameter counts, dropout, batch norm, the
perceptron rule, the primer's 3x3-on-5x5 convolution, and the default configs."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from mnist_jax import models
from mnist_jax.config import files as config_files
from mnist_jax.models import perceptron
from mnist_jax.models.cnn import CNN
from mnist_jax.models.mlp import MLP

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
X = jax.random.uniform(jax.random.key(0), (4, 28, 28, 1))


def _count(tree):
  return sum(int(np.prod(v.shape)) for v in jax.tree_util.tree_leaves(tree))


def _config(name):
  return config_files.load(os.path.join(ROOT, 'configs', name + '.py'))


def test_primers_3x3_filter_on_5x5_image():
  image = jnp.arange(25, dtype=jnp.float32).reshape(5, 5) % 4       # 0 1 2 3 0 1 ...
  kernel = jnp.array([[1., 0., -1.], [2., 0., -2.], [1., 0., -1.]])  # Sobel-like
  conv = nn.Conv(1, (3, 3), padding='VALID')
  variables = {'params': {'kernel': kernel[:, :, None, None], 'bias': jnp.zeros(1)}}
  fm = conv.apply(variables, image[None, :, :, None])[0, :, :, 0]
  img = np.asarray(image)
  expected = np.zeros((3, 3))
  for i in range(3):           # (W − K + 2P)/S + 1 = (5 − 3 + 0)/1 + 1 = 3
    for j in range(3):
      expected[i, j] = sum(img[i + u, j + v] * float(kernel[u, v])
                           for u in range(3) for v in range(3))
  assert fm.shape == (3, 3)
  np.testing.assert_allclose(fm, expected, rtol=1e-6)
  # one step by hand: top-left window [[0,1,2],[1,2,3],[2,3,0]] · kernel
  assert expected[0, 0] == (0 - 2) + 2 * (1 - 3) + (2 - 0)


def test_perceptron_shape_and_parameters():
  model = perceptron.Perceptron()
  variables = jax.jit(model.init)(jax.random.key(0), X)
  assert model.apply(variables, X).shape == (4, 10)
  assert _count(variables['params']) == 784 * 10 + 10


def test_perceptron_rule_multiclass_update_by_hand():
  params = {'dense': {'kernel': jnp.zeros((784, 10)), 'bias': jnp.zeros(10)}}
  x = jnp.ones((1, 784)) * 0.5
  new, mistakes = perceptron.perceptron_rule_epoch(params, x, jnp.array([3]), lr=0.1)
  # z = 0 for all classes, argmax -> ŷ = 0 != 3: w_3 += ηx, w_0 -= ηx.
  k = np.asarray(new['dense']['kernel'])
  np.testing.assert_allclose(k[:, 3], 0.05)
  np.testing.assert_allclose(k[:, 0], -0.05)
  assert np.count_nonzero(k[:, [1, 2, 4, 5, 6, 7, 8, 9]]) == 0
  np.testing.assert_allclose(new['dense']['bias'], [-0.1, 0, 0, 0.1, 0, 0, 0, 0, 0, 0])
  assert int(mistakes) == 1


def test_perceptron_rule_one_vs_rest_uses_the_step():
  params = {'dense': {'kernel': jnp.zeros((4, 3)), 'bias': jnp.zeros(3)}}
  new, _ = perceptron.perceptron_rule_epoch(params, jnp.ones((1, 4)), jnp.array([1]),
                                            lr=1.0, rule='one_vs_rest')
  # step(0) = 1 for every unit; targets (0, 1, 0) -> Δ = t − o = (−1, 0, −1).
  np.testing.assert_allclose(new['dense']['bias'], [-1, 0, -1])


def test_perceptron_rule_separates_separable_data():
  rng = np.random.default_rng(0)
  centres = rng.normal(size=(3, 784)) * 3
  labels = rng.integers(0, 3, 300)
  images = centres[labels] + rng.normal(size=(300, 784)) * 0.1
  variables = jax.jit(perceptron.Perceptron(num_classes=3).init)(jax.random.key(0),
                                                        jnp.zeros((1, 784)))
  epoch = jax.jit(perceptron.perceptron_rule_epoch, static_argnames='rule')
  params = variables['params']
  for _ in range(3):
    params, mistakes = epoch(params, jnp.asarray(images), jnp.asarray(labels))
  assert int(mistakes) == 0   # the convergence theorem: no mistakes once separated
  logits = perceptron.Perceptron(num_classes=3).apply({'params': params},
                                                      jnp.asarray(images))
  assert float(jnp.mean(jnp.argmax(logits, -1) == labels)) == 1.0


def test_mlp_first_layer_is_the_primers_392000_weights():
  variables = jax.jit(MLP().init)(jax.random.key(0), X)
  first = variables['params']['hidden_0']
  assert first['kernel'].size == 784 * 500 == 392_000
  assert _count(first) == 392_500
  assert _count(variables['params']) == 392_500 + 500 * 10 + 10
  assert MLP().apply(variables, X).shape == (4, 10)


def test_mlp_depth_width_and_every_activation():
  model = MLP(hidden=(64, 32, 16))
  variables = jax.jit(model.init)(jax.random.key(0), X)
  assert [variables['params'][f'hidden_{i}']['kernel'].shape[1] for i in range(3)] == [64, 32, 16]
  small = jax.jit(MLP(hidden=(16,)).init)(jax.random.key(0), X)
  for act in ('step', 'sigmoid', 'tanh', 'relu', 'leaky_relu', 'softmax', 'swish', 'gelu'):
    out = MLP(hidden=(16,), activation=act).apply(small, X)
    assert out.shape == (4, 10) and bool(jnp.all(jnp.isfinite(out))), act


def test_backprop_is_the_chain_rule_by_hand():
  # 2 -> 3 (sigmoid) -> 2, CCE. Backwards: δ2 = softmax(z2) − y, ∂L/∂W2 = a1ᵀ δ2,
  # δ1 = (δ2 W2ᵀ) ⊙ σ(z1)(1 − σ(z1)), ∂L/∂W1 = xᵀ δ1.
  from mnist_jax.nn import losses   # pylint: disable=g-import-not-at-top
  model = MLP(num_classes=2, hidden=(3,), activation='sigmoid')
  x = jnp.array([[0.5, -1.0]])
  y = jnp.array([[0.0, 1.0]])
  params = jax.jit(model.init)(jax.random.key(0), x)['params']
  grads = jax.grad(lambda p: losses.get('cce')(model.apply({'params': p}, x), y).sum())(
      params)
  w1, b1 = np.asarray(params['hidden_0']['kernel']), np.asarray(params['hidden_0']['bias'])
  w2, b2 = np.asarray(params['output']['kernel']), np.asarray(params['output']['bias'])
  xn, yn = np.asarray(x), np.asarray(y)
  a1 = 1 / (1 + np.exp(-(xn @ w1 + b1)))
  z2 = a1 @ w2 + b2
  p = np.exp(z2) / np.exp(z2).sum()
  d2 = p - yn
  d1 = (d2 @ w2.T) * a1 * (1 - a1)
  np.testing.assert_allclose(grads['output']['kernel'], a1.T @ d2, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(grads['output']['bias'], d2[0], rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(grads['hidden_0']['kernel'], xn.T @ d1, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(grads['hidden_0']['bias'], d1[0], rtol=1e-5, atol=1e-7)


def test_dropout_differs_between_train_and_eval():
  model = MLP(hidden=(64,), dropout_rate=0.5)
  variables = jax.jit(model.init)(jax.random.key(0), X)
  eval1, eval2 = model.apply(variables, X), model.apply(variables, X)
  np.testing.assert_array_equal(eval1, eval2)             # eval is deterministic
  train = model.apply(variables, X, train=True, rngs={'dropout': jax.random.key(1)})
  assert not np.allclose(train, eval1)
  with pytest.raises(Exception):                           # training needs the rng
    model.apply(variables, X, train=True)


def test_cnn_shapes_pooling_and_padding():
  for kwargs in ({}, {'pool': 'avg'}, {'pool': 'none', 'strides': 2},
                 {'padding': 1, 'kernel_size': 3}, {'padding': 'VALID', 'features': (8,)},
                 {'padding': '2', 'kernel_size': 5, 'batch_norm': False}):
    model = CNN(features=kwargs.pop('features', (8, 16)), dense=(32,), **kwargs)
    out = jax.eval_shape(lambda x: model.init_with_output(jax.random.key(0), x)[0], X)
    assert out.shape == (4, 10), kwargs
  with pytest.raises(ValueError, match='pool'):
    CNN(pool='median').init(jax.random.key(0), X)


def test_cnn_conv_impls_agree():
  """nn.Conv + nn.max_pool and their drop-in replacements: the same logits."""
  model = CNN(features=(4, 8), dense=(16,), padding=1)
  variables = jax.jit(model.init)(jax.random.key(0), X)
  for impl in ('patches', 'shift'):
    fast = model.clone(**models.layers_for(impl, 'cpu'))
    np.testing.assert_allclose(model.apply(variables, X), fast.apply(variables, X),
                               rtol=1e-4, atol=1e-5)


def test_batch_norm_train_updates_running_averages_eval_uses_them():
  model = CNN(features=(8,), dense=(), pool='none', bn_momentum=0.9)
  variables = jax.jit(model.init)(jax.random.key(0), X)
  assert set(variables) == {'params', 'batch_stats'}
  _, updates = model.apply(variables, X, train=True, mutable=['batch_stats'],
                           rngs={'dropout': jax.random.key(1)})
  conv = nn.Conv(8, (3, 3), padding='SAME', use_bias=False).apply(
      {'params': variables['params']['conv_0']}, X)
  batch_mean = np.asarray(conv.mean(axis=(0, 1, 2)))
  # μ ← m·μ + (1 − m)·μ_B with μ = 0 at init.
  np.testing.assert_allclose(updates['batch_stats']['bn_0']['mean'], 0.1 * batch_mean,
                             rtol=1e-4, atol=1e-6)
  # Eval mode uses the running averages: changing them changes the output;
  # train mode ignores them.
  shifted = jax.tree_util.tree_map(lambda a: a + 1.0, variables['batch_stats'])
  other = {'params': variables['params'], 'batch_stats': shifted}
  assert not np.allclose(model.apply(variables, X), model.apply(other, X))
  train_a, _ = model.apply(variables, X, train=True, mutable=['batch_stats'])
  train_b, _ = model.apply(other, X, train=True, mutable=['batch_stats'])
  np.testing.assert_allclose(train_a, train_b, rtol=1e-5, atol=1e-5)


def test_batch_norm_cross_device_mean_under_axis_name():
  model = CNN(features=(4,), dense=(), pool='none')
  variables = jax.jit(model.init)(jax.random.key(0), X)
  one, stats_one = jax.jit(lambda v, x: model.apply(v, x, train=True,
                                                    mutable=['batch_stats']))(variables, X)
  sharded = model.clone(axis_name='devices')
  two, stats_two = jax.jit(jax.vmap(
      lambda x: sharded.apply(variables, x, train=True, mutable=['batch_stats']),
      axis_name='devices'))(X.reshape(2, 2, 28, 28, 1))
  np.testing.assert_allclose(two.reshape(4, 10), one, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(stats_two['batch_stats']['bn_0']['mean'][0],
                             stats_one['batch_stats']['bn_0']['mean'], rtol=1e-5)


@pytest.mark.parametrize('name,params', [('perceptron', 7_850), ('mlp', 397_510),
                                         ('cnn', None)])
def test_default_configs_build_and_train_one_step(name, params):
  from mnist_jax import train   # pylint: disable=g-import-not-at-top
  config = _config(name)
  config.batch_size = 8
  model = models.build(config.model)
  variables = jax.eval_shape(model.init, jax.random.key(0), X)
  if params is not None:
    assert _count(variables['params']) == params
  if name == 'cnn':   # keep the compile small; augmentation, BN, dropout stay on
    config.model.features, config.model.dense = (4, 4, 4), (8,)
  state = train.create_train_state(config, jax.random.key(0), num_train=64)
  batch = {'image': jnp.concatenate([X, X]), 'label': jnp.arange(8) % 10}
  step = jax.jit(train.train_step)
  new, _ = step(state, batch, jax.random.key(1))   # (warmup: η = 0 at step 0)
  new, metrics = step(new, batch, jax.random.key(2))
  assert bool(jnp.isfinite(metrics['loss']))
  changed = jax.tree_util.tree_map(lambda a, b: not np.allclose(a, b),
                                   new.params, state.params)
  assert any(jax.tree_util.tree_leaves(changed))
