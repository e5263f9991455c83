"""The math of the speed levers: patch whitening, the normalization-bias learning
rate, muon on conv kernels, label smoothing and SpeedNet's eval-time shifts."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mnist_jax.config import defaults
from mnist_jax.models.speednet import SpeedNet, shift
from mnist_jax.nn import losses, optim, whitening


def _images(n=40, seed=0):
  """Smooth random images: neighbouring pixels correlated, as in digits."""
  x = np.random.RandomState(seed).rand(n, 30, 30, 1)
  x = (x[:, 1:-1, 1:-1] + x[:, :-2, 1:-1] + x[:, 2:, 1:-1] + x[:, 1:-1, :-2]
       + x[:, 1:-1, 2:]) / 5
  return x.astype(np.float32)


def test_whitened_patches_have_identity_covariance():
  images = _images()
  kernel = np.asarray(whitening.filters(images, 3, 18, eps=1e-8, limit=0))
  assert kernel.shape == (3, 3, 1, 18)
  w = kernel.reshape(9, 18)[:, ::2]                          # +w_1, ..., +w_9
  np.testing.assert_allclose(kernel.reshape(9, 18)[:, 1::2], -w)   # and their negatives
  p = whitening.patches(images, 3)
  z = (p - p.mean(axis=0)) @ w
  np.testing.assert_allclose(z.T @ z / len(z), np.eye(9), atol=1e-3)


def test_whitening_patches_follow_the_kernel_layout():
  """z = w·p of ``patches`` is what the conv with that kernel computes at a pixel."""
  images = _images(4)
  kernel = jnp.asarray(whitening.filters(images, 3, 6, limit=0))
  out = jax.lax.conv_general_dilated(images, kernel, (1, 1), 'VALID',
                                     dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  z = whitening.patches(images, 3) @ np.asarray(kernel).reshape(9, 6)
  np.testing.assert_allclose(np.asarray(out).reshape(-1, 6), z, rtol=1e-4, atol=1e-4)


def test_speednet_starts_from_and_freezes_the_whitening():
  kernel = whitening.filters(_images(), 3, 16)
  x = jnp.asarray(_images(2))
  trained = SpeedNet(whitening=kernel)
  v = jax.jit(trained.init)(jax.random.key(0), x)
  np.testing.assert_allclose(v['params']['conv_0']['kernel'], np.asarray(kernel), rtol=1e-6)
  frozen = SpeedNet(whitening=kernel, freeze_whitening=True)
  fv = jax.jit(frozen.init)(jax.random.key(0), x)
  assert 'conv_0' not in fv['params']   # a constant: no parameter, no gradient
  same = {**fv, 'params': {**fv['params'], 'conv_0': v['params']['conv_0']}}
  np.testing.assert_allclose(jax.jit(frozen.apply)(fv, x), jax.jit(trained.apply)(same, x),
                             atol=1e-4)


def _sgd(**changes):
  config = defaults.get_config()
  config.optimizer, config.learning_rate, config.schedule = 'sgd', 0.1, 'constant'
  config.update(changes)
  return optim.create_optimizer(config, 10)


def test_norm_bias_steps_c_times_the_others_under_sgd():
  params = SpeedNet().init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))['params']
  grads = jax.tree_util.tree_map(jnp.ones_like, params)
  plain = _sgd().update(grads, _sgd().init(params), params)[0]
  tx = _sgd(norm_bias_lr_scale=8.0)
  scaled = tx.update(grads, tx.init(params), params)[0]
  for path, u in jax.tree_util.tree_leaves_with_path(scaled):
    names = [k.key for k in path]
    ref = plain
    for n in names:
      ref = ref[n]
    factor = 8.0 if names[0].startswith('bn_') and names[-1] == 'bias' else 1.0
    np.testing.assert_allclose(u, factor * ref, rtol=1e-6)
    np.testing.assert_allclose(ref, -0.1 * np.ones_like(ref), rtol=1e-6)


def _state_types(state) -> set:
  """The class names of every node of an optax state (its nested states)."""
  names = {type(state).__name__}
  children = state.values() if isinstance(state, dict) else (
      state if isinstance(state, (tuple, list)) else ())
  for child in children:
    names |= _state_types(child)
  return names


def test_muon_orthogonalizes_conv_kernels_and_steps_the_rest_with_adam():
  config = defaults.get_config()
  config.optimizer, config.learning_rate, config.schedule = 'muon', 1.0, 'constant'
  tx = optim.create_optimizer(config, 10)
  kinds = _state_types(tx.init({'conv': {'kernel': jnp.zeros((3, 3, 4, 8))},
                                'bn': {'bias': jnp.zeros(8)}}))
  assert 'MuonState' in kinds and 'ScaleByAdamState' in kinds
  g = jax.random.normal(jax.random.key(1), (3, 3, 4, 8))
  params = {'conv': {'kernel': jnp.zeros((3, 3, 4, 8))}, 'bn': {'bias': jnp.zeros(8)}}
  grads = {'conv': {'kernel': g}, 'bn': {'bias': jnp.full(8, 2.0)}}
  u = jax.jit(tx.update)(grads, tx.init(params), params)[0]
  # the conv kernel as a 36 x 8 matrix: singular values all about one value,
  # MUON_RMS·√36 (the polar factor U Vᵀ, scaled to RMS 0.2)
  s = np.linalg.svd(np.asarray(u['conv']['kernel']).reshape(36, 8), compute_uv=False)
  target = optim.MUON_RMS * 6.0
  assert np.all(np.abs(s / target - 1) < 0.35)
  s_g = np.linalg.svd(np.asarray(g).reshape(36, 8), compute_uv=False)
  assert s_g.max() / s_g.min() > 2    # the gradient itself was far from orthogonal
  # adam's first step is −η·sign(g) for the rest
  np.testing.assert_allclose(u['bn']['bias'], -np.ones(8), rtol=1e-3)


def test_smoothed_cross_entropy_matches_the_hand_formula():
  logits = jnp.array([[2.0, -1.0, 0.5], [0.0, 0.0, 3.0]])
  targets = jnp.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
  a, k = losses.SMOOTHING, 3
  soft = (1 - a) * np.asarray(targets) + a / k
  log_p = np.log(np.exp(logits) / np.exp(logits).sum(-1, keepdims=True))
  np.testing.assert_allclose(losses.get('cce_smooth')(logits, targets),
                             -(soft * log_p).sum(-1), rtol=1e-6)
  np.testing.assert_allclose(losses.smooth_labels(targets).sum(-1), 1.0)


def test_shift_moves_the_image_and_repeats_its_edge():
  x = jnp.arange(16.0).reshape(1, 4, 4, 1)
  right = shift(x, 0, 1)[0, :, :, 0]
  np.testing.assert_array_equal(right[:, 1:], x[0, :, :-1, 0])
  np.testing.assert_array_equal(right[:, 0], x[0, :, 0, 0])
  up = shift(x, -1, 0)[0, :, :, 0]
  np.testing.assert_array_equal(up[:-1], x[0, 1:, :, 0])


@pytest.mark.parametrize('shifts', [((0, 1), (0, -1)), ((1, 0), (-1, 0), (0, 1))])
def test_tta_is_the_mean_of_the_shifted_passes(shifts):
  x = jnp.asarray(_images(3))
  plain, tta = SpeedNet(), SpeedNet(tta=shifts)
  v = jax.jit(plain.init)(jax.random.key(0), x)
  views = [x] + [shift(x, dy, dx) for dy, dx in shifts]
  expected = np.mean([jax.jit(plain.apply)(v, view) for view in views], axis=0)
  np.testing.assert_allclose(jax.jit(tta.apply)(v, x), expected, rtol=1e-4, atol=1e-5)
  # training ignores it: the plain forward pass, batch statistics as usual
  train = lambda m: jax.jit(lambda v, x: m.apply(v, x, train=True, mutable=['batch_stats']))
  np.testing.assert_allclose(train(tta)(v, x)[0], train(plain)(v, x)[0])


def test_pool_first_normalizes_the_pooled_maps():
  """pool_first: each block is ReLU(BN(max-pool(conv x))), BN's μ_B and σ²_B taken
  over the pooled maps (training mode), with the same parameters as the default
  order ReLU(max-pool(BN(conv x))); the two differ only through those statistics."""
  x = _images(6)[:, :28, :28]
  first = SpeedNet(features=(4,), kernel_sizes=(3,), paddings=(1,), pool_first=True)
  last = SpeedNet(features=(4,), kernel_sizes=(3,), paddings=(1,))
  variables = jax.jit(first.init)(jax.random.key(0), x)
  assert jax.tree_util.tree_structure(variables) == jax.tree_util.tree_structure(
      jax.eval_shape(last.init, jax.random.key(0), x))
  train = lambda m: jax.jit(lambda v: m.apply(v, x, train=True, mutable=['batch_stats'])[0])
  out, other = np.asarray(train(first)(variables)), np.asarray(train(last)(variables))
  p = jax.tree_util.tree_map(np.asarray, variables['params'])
  padded, k = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0))), p['conv_0']['kernel']
  conv = sum(padded[:, i:i + 28, j:j + 28, :] @ k[i, j] for i in range(3) for j in range(3))
  pooled = conv.reshape(6, 14, 2, 14, 2, 4).max(axis=(2, 4))
  mu, var = pooled.mean(axis=(0, 1, 2)), pooled.var(axis=(0, 1, 2))
  h = np.maximum((pooled - mu) / np.sqrt(var + 1e-5) * p['bn_0']['scale']
                 + p['bn_0']['bias'], 0)
  want = h.reshape(6, -1) @ p['output']['kernel'] + p['output']['bias']
  np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-4)
  assert not np.allclose(out, other, atol=1e-3)
