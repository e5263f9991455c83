"""The preprocessing of the primer, pure jax.numpy (runs inside jit).

The ONE input pipeline every model sees (``prepare``), in this order:
  normalize:   x = p / 255                 uint8 pixels 0..255 -> float32 in [0, 1]
  augment:     x ← T(x), zero fill          training only (data/augment.py); 0 = background
  standardize: x' = (x − μ) / σ            optional; μ, σ of x over the run's own training
                                          split (data/describe.py), recorded with the run
Standardizing last keeps shifted or rotated-in pixels at the background value
(x = 0 → x' = −μ/σ, like every other background pixel), not at grey.
one_hot:    label k -> y ∈ {0,1}^K with y_k = 1, Σ y = 1  (targets for the losses)

The train state records its settings (``train.TrainState.augment`` and
``.standardize`` = (μ, σ)) and calls ``prepare`` in train_step, eval_step and predict,
so everything that uses a state (the trainer, stacked models, api, predict, plots)
feeds the model exactly what it was trained on.
"""
import jax
import jax.numpy as jnp

from mnist_jax.data import augment as augment_lib

# μ, σ of MNIST's 60,000 training images as published (the full set gives
# 0.13066, 0.30811): what runs used before they recorded their own statistics.
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081


def normalize(images, *, dtype=jnp.float32):
  """uint8 pixels 0..255 -> x = p / 255 in [0, 1]; float images are taken to be
  x already (the public batch format) and only cast."""
  if jnp.issubdtype(images.dtype, jnp.integer):
    return images.astype(dtype) / 255.0
  return images.astype(dtype)


def standardize(x, mean: float, std: float):
  """x' = (x − μ) / σ."""
  return (x - mean) / std


def augment_settings(cfg) -> tuple:
  """config.augment as a hashable, sorted ((key, value), ...); () when it is off."""
  if cfg is None or not augment_lib.is_enabled(cfg):
    return ()
  return tuple(sorted((k, float(cfg[k])) for k in augment_lib.KEYS))


def prepare(images, rng=None, *, augment: tuple = (), stats: tuple = ()):
  """x = p/255 → augment (when ``rng`` is given and ``augment`` is on) → (x − μ)/σ
  with ``stats`` = (μ, σ) (() = no standardization)."""
  x = normalize(images)
  if rng is not None and augment:
    x = augment_lib.augment(rng, x, dict(augment))
  return standardize(x, *stats) if stats else x


def one_hot(labels, num_classes: int = 10, dtype=jnp.float32):
  """Integer labels 0..K-1 -> one-hot vectors (…, K)."""
  return jax.nn.one_hot(labels, num_classes, dtype=dtype)
