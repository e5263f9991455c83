"""MNIST preprocessing of the primer, pure jax.numpy (runs inside jit).

The ONE input pipeline every model sees (``prepare``), in this order:
  normalize:   x = p / 255                 uint8 pixels 0..255 -> float32 in [0, 1]
  augment:     x ← T(x), zero fill          training only (data/augment.py); 0 = background
  standardize: x' = (x − μ) / σ            optional, the train set's μ = 0.1307, σ = 0.3081
Standardizing last keeps shifted or rotated-in pixels at the background value
(x = 0 → x' = −μ/σ, like every other background pixel), not at grey.
one_hot:    label k -> y ∈ {0,1}^K with y_k = 1, Σ y = 1  (targets for the losses)

The train state records its settings (``train.TrainState.augment`` and
``.standardize``) and calls ``prepare`` in train_step, eval_step and predict,
so everything that uses a state (the driver, stacked models, api, predict, plots)
feeds the model exactly what it was trained on.
"""
import jax
import jax.numpy as jnp

from mnist_jax.data import augment as augment_lib

MNIST_MEAN = 0.1307
MNIST_STD = 0.3081


def normalize(images, *, dtype=jnp.float32):
  """uint8 pixels 0..255 -> x = p / 255 in [0, 1]; float images are taken to be
  x already (the public batch format) and only cast."""
  if jnp.issubdtype(images.dtype, jnp.integer):
    return images.astype(dtype) / 255.0
  return images.astype(dtype)


def standardize(x):
  """x' = (x − μ) / σ."""
  return (x - MNIST_MEAN) / MNIST_STD


def augment_settings(cfg) -> tuple:
  """config.augment as a hashable, sorted ((key, value), ...); () when it is off."""
  if cfg is None or not augment_lib.is_enabled(cfg):
    return ()
  return tuple(sorted((k, float(cfg[k])) for k in augment_lib.KEYS))


def prepare(images, rng=None, *, augment: tuple = (), standardize_inputs: bool = False):
  """x = p/255 → augment (when ``rng`` is given and ``augment`` is on) → (x − μ)/σ."""
  x = normalize(images)
  if rng is not None and augment:
    x = augment_lib.augment(rng, x, dict(augment))
  return standardize(x) if standardize_inputs else x


def one_hot(labels, num_classes: int = 10, dtype=jnp.float32):
  """Integer labels 0..K-1 -> one-hot vectors (…, K)."""
  return jax.nn.one_hot(labels, num_classes, dtype=dtype)
