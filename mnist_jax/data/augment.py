"""Data augmentation on the device, inside the jitted train step (pure jax).

Every transform is one resampling of the image: output pixel p = (row, col)
reads the input at a source point q(p), bilinearly interpolated, zero outside.
With the image centre c = ((H−1)/2, (W−1)/2), rotation θ (counter-clockwise),
scale s and integer shift t = (t_row, t_col):

  q(p) = c + (1/s) · R(−θ) · (p − c − t) + α · G_σ ∗ u(p)

R(θ) = [[cos θ, −sin θ], [sin θ, cos θ]] in (row, col) coordinates; u is a
uniform(−1, 1) displacement field per pixel and axis, G_σ ∗ a Gaussian blur of
standard deviation σ (zero-filled borders), α its scale: the elastic distortion
of Simard, Steinkraus & Platt (2003), typical α = 34, σ = 4.

Parameters per image are drawn from ``config.augment`` (all 0 = off):
  translate  t ~ integer uniform in [−⌊translate⌋, ⌊translate⌋] per axis
  rotate     θ ~ uniform(−rotate, rotate) degrees
  scale      s ~ uniform(1 − scale, 1 + scale)
  elastic_alpha, elastic_sigma   α and σ (elastic is off while α = 0)
The draw is a deterministic function of the step rng (one key per image).
"""
import math

import jax
import jax.numpy as jnp

from mnist_jax.errors import UserError

KEYS = ('translate', 'rotate', 'scale', 'elastic_alpha', 'elastic_sigma')


def check(cfg) -> None:
  """Raises UserError for values no transform can use (negative, scale >= 1, ...)."""
  for key in KEYS:
    if float(cfg[key]) < 0:
      raise UserError(f'config.augment.{key}={cfg[key]} is negative; set it to 0 '
                      '(off) or a positive maximum')
  if float(cfg['scale']) >= 1:
    raise UserError(f"config.augment.scale={cfg['scale']} would allow scale <= 0; "
                    'use a relative change below 1 (e.g. 0.1 for ±10 %)')
  if float(cfg['elastic_alpha']) > 0 and float(cfg['elastic_sigma']) <= 0:
    raise UserError('config.augment.elastic_sigma must be > 0 when elastic_alpha > 0; '
                    'set it to e.g. 4.0')


def is_enabled(cfg) -> bool:
  """True if any transform of ``cfg`` (config.augment, a dict or ConfigDict) is on."""
  return any(float(cfg[k]) != 0 for k in ('translate', 'rotate', 'scale',
                                          'elastic_alpha'))


def source_coordinates(shape, angle=0.0, scale=1.0, shift=(0.0, 0.0)):
  """q(p) of the affine part for every output pixel p: float32 (2, H, W).

  ``angle`` in radians (counter-clockwise), ``shift`` = (t_row, t_col).
  """
  h, w = shape
  rows, cols = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32),
                            jnp.arange(w, dtype=jnp.float32), indexing='ij')
  cr, cc = (h - 1) / 2.0, (w - 1) / 2.0
  r = rows - cr - shift[0]
  c = cols - cc - shift[1]
  cos, sin = jnp.cos(angle), jnp.sin(angle)
  # Inverse map R(−θ)/s: the source of p for a forward rotation by θ.
  src_r = cr + (cos * r + sin * c) / scale
  src_c = cc + (-sin * r + cos * c) / scale
  return jnp.stack([src_r, src_c])


def gaussian_matrix(n: int, sigma: float):
  """(n, n) matrix G with G[i, j] = g(i − j): the 1-D Gaussian blur of σ as a
  matrix, truncated at 4σ and normalized to sum 1 (zero-filled borders)."""
  radius = max(1, int(math.ceil(4.0 * sigma)))
  offsets = jnp.arange(-radius, radius + 1, dtype=jnp.float32)
  g = jnp.exp(-0.5 * (offsets / sigma) ** 2)
  g = g / jnp.sum(g)
  d = jnp.arange(n)[:, None] - jnp.arange(n)[None, :]
  return jnp.where(jnp.abs(d) <= radius, g[jnp.clip(d + radius, 0, 2 * radius)], 0.0)


def elastic_displacement(rng, shape, alpha: float, sigma: float):
  """α · G_σ ∗ u with u ~ uniform(−1, 1): a smooth displacement field (2, H, W)."""
  h, w = shape
  u = jax.random.uniform(rng, (2, h, w), jnp.float32, -1.0, 1.0)
  gh, gw = gaussian_matrix(h, sigma), gaussian_matrix(w, sigma)
  return alpha * jnp.einsum('ij,ajk,lk->ail', gh, u, gw)


def warp(image, coords):
  """Samples image (H, W, C) at coords (2, H, W): bilinear, 0 outside the image.

  With q = (r, c), r₀ = ⌊r⌋, c₀ = ⌊c⌋, a = r − r₀ and b = c − c₀:

    out(p) = Σ_{i ∈ {r₀, r₀+1}, j ∈ {c₀, c₀+1}} w_i · v_j · x[i, j]

  with w_{r₀} = 1 − a, w_{r₀+1} = a, v_{c₀} = 1 − b, v_{c₀+1} = b, and x = 0 outside
  the image: the terms of jax.scipy.ndimage.map_coordinates(order=1,
  mode='constant'), in its order. The four terms are summed by one reduce, not by
  additions: XLA copies a chain of cheap element-wise ops into every op that reads
  its result, and the first layer's patches (nn/fast_layers.py) read the image K·K
  times, so a resampling that ended in additions ran K·K times a step; a reduce
  runs once.
  """
  x = image.astype(jnp.float32)
  h, w = x.shape[:2]

  def corners(q):   # [(index, weight)] of the lower and the upper neighbour
    lower = jnp.floor(q)
    upper_weight = q - lower
    index = lower.astype(jnp.int32)
    return [(index, 1 - upper_weight), (index + 1, upper_weight)]

  terms = []
  for i, w_i in corners(coords[0]):
    for j, v_j in corners(coords[1]):
      inside = (0 <= i) & (i < h) & (0 <= j) & (j < w)
      terms.append((w_i * v_j)[..., None] * jnp.where(inside[..., None], x[i, j], 0.0))
  return jnp.sum(jnp.stack(terms), axis=0).astype(image.dtype)


def transform(image, angle=0.0, scale=1.0, shift=(0.0, 0.0), displacement=None):
  """One image (H, W, C): rotate by ``angle`` (radians), scale, shift, and add a
  displacement field (2, H, W), all in a single bilinear resampling."""
  coords = source_coordinates(image.shape[:2], angle, scale, shift)
  if displacement is not None:
    coords = coords + displacement
  return warp(image, coords)


def translate(images, shifts):
  """Integer shift with zero fill: out[n, r, c] = in[n, r − t_r, c − t_c]
  (0 where that is outside). images (N, H, W, C), shifts int (N, 2)."""
  shifts = jnp.asarray(shifts).astype(jnp.float32)
  return jax.vmap(lambda x, t: transform(x, shift=t))(images, shifts)


def _random_transform(rng, image, cfg):
  k_shift, k_angle, k_scale, k_elastic = jax.random.split(rng, 4)
  max_shift = int(math.floor(float(cfg['translate'])))
  max_angle = math.radians(float(cfg['rotate']))
  max_scale = float(cfg['scale'])
  alpha, sigma = float(cfg['elastic_alpha']), float(cfg['elastic_sigma'])
  shift = (jax.random.randint(k_shift, (2,), -max_shift, max_shift + 1)
           .astype(jnp.float32) if max_shift > 0 else (0.0, 0.0))
  angle = (jax.random.uniform(k_angle, (), jnp.float32, -max_angle, max_angle)
           if max_angle > 0 else 0.0)
  scale = (jax.random.uniform(k_scale, (), jnp.float32, 1 - max_scale, 1 + max_scale)
           if max_scale > 0 else 1.0)
  displacement = None
  if alpha != 0:
    displacement = elastic_displacement(k_elastic, image.shape[:2], alpha, sigma)
  return transform(image, angle, scale, shift, displacement)


def augment(rng, images, cfg):
  """Randomly transformed copies of float images (B, H, W, C); see the module
  docstring. Returns ``images`` itself when ``cfg`` turns everything off."""
  check(cfg)
  if not is_enabled(cfg):
    return images
  keys = jax.random.split(rng, images.shape[0])
  return jax.vmap(lambda k, x: _random_transform(k, x, cfg))(keys, images)
