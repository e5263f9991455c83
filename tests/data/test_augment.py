"""On-device augmentation: exact shifts, identity, rotation, elastic, determinism."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mnist_jax.config import defaults
from mnist_jax.data import augment
from mnist_jax.errors import UserError

OFF = dict(translate=0.0, rotate=0.0, scale=0.0, elastic_alpha=0.0, elastic_sigma=4.0)
ALL_ON = dict(translate=2.0, rotate=15.0, scale=0.1, elastic_alpha=34.0,
              elastic_sigma=4.0)


def _pattern():
  x = np.zeros((28, 28, 1), np.float32)
  x[3:10, 5:8] = 1.0     # an asymmetric bar
  x[20, 22] = 0.5        # and a dot
  return x


def _images(n=4):
  return jnp.asarray(np.random.default_rng(0).random((n, 28, 28, 1), np.float32))


@pytest.mark.parametrize('shift', [(2, -3), (0, 1), (-1, 0), (3, 3)])
def test_shift_equals_roll_with_zero_fill(shift):
  x = _pattern()
  dr, dc = shift
  expected = np.roll(x, (dr, dc), axis=(0, 1))
  if dr > 0:
    expected[:dr] = 0
  elif dr < 0:
    expected[dr:] = 0
  if dc > 0:
    expected[:, :dc] = 0
  elif dc < 0:
    expected[:, dc:] = 0
  out = augment.translate(jnp.asarray(x)[None], jnp.array([shift]))
  np.testing.assert_array_equal(np.asarray(out[0]), expected)


def test_identity_parameters_return_input_exactly():
  images = _images()
  out = jax.vmap(lambda x: augment.transform(x, angle=0.0, scale=1.0,
                                             shift=(0.0, 0.0)))(images)
  np.testing.assert_array_equal(np.asarray(out), np.asarray(images))
  assert augment.augment(jax.random.key(0), images, OFF) is images
  assert not augment.is_enabled(defaults.get_config().augment)   # off by default


def test_warp_is_map_coordinates_bilinear_bit_for_bit():
  """warp's terms and their order are map_coordinates(order=1, mode='constant')'s,
  sources outside the image included (zero fill); two channels sample alike."""
  keys = jax.random.split(jax.random.key(0), 3)
  image = jax.random.uniform(keys[0], (28, 28, 2))
  coords = augment.source_coordinates((28, 28), 0.4, 0.8, (2.0, -3.0))
  coords = coords + jax.random.normal(keys[1], coords.shape)        # off-grid, some outside
  assert bool(jnp.any(coords < 0)) and bool(jnp.any(coords > 27))
  ours = jax.jit(augment.warp)(image, coords)
  for ch in range(2):
    ref = jax.jit(lambda x, q: jax.scipy.ndimage.map_coordinates(
        x, [q[0], q[1]], order=1, mode='constant', cval=0.0))(image[..., ch], coords)
    np.testing.assert_array_equal(np.asarray(ours[..., ch]), np.asarray(ref))


def test_rotation_by_90_degrees_is_rot90():
  x = _pattern()
  out = augment.transform(jnp.asarray(x), angle=math.pi / 2)
  np.testing.assert_allclose(np.asarray(out), np.rot90(x, 1, axes=(0, 1)), atol=1e-5)


def test_scale_enlarges_about_the_centre():
  x = np.zeros((28, 28, 1), np.float32)
  x[12:16, 12:16] = 1.0                          # 4x4 centred square
  out = np.asarray(augment.transform(jnp.asarray(x), scale=2.0))
  assert out.sum() > 3.0 * x.sum()               # area grows ~s² = 4
  np.testing.assert_allclose(out[13:15, 13:15], 1.0)


def test_elastic_with_alpha_zero_is_identity():
  images = _images(2)
  disp = augment.elastic_displacement(jax.random.key(1), (28, 28), 0.0, 4.0)
  np.testing.assert_array_equal(np.asarray(disp), 0.0)
  out = augment.transform(images[0], displacement=disp)
  np.testing.assert_array_equal(np.asarray(out), np.asarray(images[0]))


def test_elastic_field_is_smooth_and_scaled_by_alpha():
  key = jax.random.key(2)
  d1 = augment.elastic_displacement(key, (28, 28), 1.0, 4.0)
  d34 = augment.elastic_displacement(key, (28, 28), 34.0, 4.0)
  np.testing.assert_allclose(d34, 34.0 * d1, rtol=1e-5, atol=1e-6)
  raw = jax.random.uniform(key, (2, 28, 28), minval=-1, maxval=1)
  # Gaussian smoothing shrinks neighbour-to-neighbour differences a lot.
  assert float(jnp.abs(jnp.diff(d1, axis=1)).mean()) < 0.1 * float(
      jnp.abs(jnp.diff(raw, axis=1)).mean())


def test_gaussian_matrix_rows_are_normalized_in_the_interior():
  g = augment.gaussian_matrix(40, 2.0)
  np.testing.assert_allclose(g[20].sum(), 1.0, rtol=1e-5)
  np.testing.assert_allclose(g, g.T)


def test_deterministic_from_rng_shape_dtype_and_jit():
  images = _images()
  fn = jax.jit(lambda rng, x: augment.augment(rng, x, ALL_ON))
  a = fn(jax.random.key(3), images)
  b = fn(jax.random.key(3), images)
  c = fn(jax.random.key(4), images)
  assert a.shape == images.shape and a.dtype == images.dtype
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert not np.allclose(np.asarray(a), np.asarray(c))
  assert not np.allclose(np.asarray(a), np.asarray(images))
  assert bool(jnp.all(jnp.isfinite(a)))


def test_random_translation_is_an_integer_shift():
  cfg = dict(OFF, translate=2.0)
  x = jnp.asarray(_pattern())[None]
  out = np.asarray(augment.augment(jax.random.key(5), x, cfg)[0])
  candidates = [np.asarray(augment.translate(x, jnp.array([[r, c]]))[0])
                for r in range(-2, 3) for c in range(-2, 3)]
  assert any(np.array_equal(out, cand) for cand in candidates)


def test_works_with_a_configdict_and_bfloat16():
  cfg = defaults.get_config().augment
  cfg.rotate = 10.0
  assert augment.is_enabled(cfg)
  out = augment.augment(jax.random.key(0), _images(2).astype(jnp.bfloat16), cfg)
  assert out.dtype == jnp.bfloat16 and out.shape == (2, 28, 28, 1)


@pytest.mark.parametrize('key,value', [('rotate', -5.0), ('scale', 1.0),
                                       ('elastic_sigma', 0.0)])
def test_bad_values_are_user_errors(key, value):
  cfg = dict(ALL_ON, **{key: value})
  with pytest.raises(UserError, match=f'config.augment.{key}'):
    augment.augment(jax.random.key(0), _images(1), cfg)
