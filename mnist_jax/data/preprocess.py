"""MNIST preprocessing of the primer, pure jax.numpy (runs inside jit).

normalize:  x = pixel / 255               uint8 0..255 -> float32 in [0, 1]
standardize (optional): x' = (x - μ) / σ  with the train set's μ = 0.1307, σ = 0.3081
one_hot:    label k -> y ∈ {0,1}^K with y_k = 1, Σ y = 1  (targets for the losses)
"""
import jax
import jax.numpy as jnp

MNIST_MEAN = 0.1307
MNIST_STD = 0.3081


def normalize(images, *, standardize: bool = False, dtype=jnp.float32):
  """uint8 pixels 0..255 -> floats x = p / 255 in [0, 1] (then (x-μ)/σ if asked)."""
  x = images.astype(dtype) / 255.0
  if standardize:
    x = (x - MNIST_MEAN) / MNIST_STD
  return x


def one_hot(labels, num_classes: int = 10, dtype=jnp.float32):
  """Integer labels 0..K-1 -> one-hot vectors (…, K)."""
  return jax.nn.one_hot(labels, num_classes, dtype=dtype)
