"""Activation functions of the primer (plus swish and GELU for later models).

Without an activation a stack of layers is one linear map: W2(W1 x) = (W2 W1) x.
Each function maps a pre-activation z = w·x + b element-wise to an output.

| name       | formula                           | range        |
|------------|-----------------------------------|--------------|
| step       | 1 if z >= 0 else 0                | {0, 1}       |
| sigmoid    | σ(z) = 1 / (1 + e^-z)             | (0, 1)       |
| tanh       | (e^z - e^-z) / (e^z + e^-z)       | (-1, 1)      |
| relu       | max(0, z)                         | [0, ∞)       |
| leaky_relu | max(αz, z), α = 0.01              | (-∞, ∞)      |
| softmax    | e^{z_i} / Σ_j e^{z_j}             | (0, 1), Σ=1  |
| swish      | z · σ(z)   (EfficientNet)         | ≈[-0.28, ∞)  |
| gelu       | z · Φ(z)   (Φ = normal CDF)       | ≈[-0.17, ∞)  |
"""
import functools
from typing import Callable

import jax
import jax.numpy as jnp

from mnist_jax.errors import UserError


def step(z):
  """Heaviside step, McCulloch–Pitts 1943: 1 if z >= 0 else 0.

  Its derivative is 0 everywhere (undefined at 0), so gradient descent cannot
  train through it; the perceptron learning rule does (see models/perceptron.py).
  """
  return (z >= 0).astype(z.dtype)


def sigmoid(z):
  """σ(z) = 1 / (1 + e^-z), range (0, 1); σ'(z) = σ(z)(1 - σ(z))."""
  return jax.nn.sigmoid(z)


def tanh(z):
  """tanh(z) = (e^z - e^-z) / (e^z + e^-z), range (-1, 1), zero-centred."""
  return jnp.tanh(z)


def relu(z):
  """ReLU(z) = max(0, z), range [0, ∞); gradient 1 for z > 0, else 0."""
  return jnp.maximum(z, 0)


def leaky_relu(z, alpha: float = 0.01):
  """max(αz, z) for 0 < α < 1 (α ≈ 0.01): a small slope keeps 'dead' units learning."""
  return jnp.where(z >= 0, z, alpha * z)


def softmax(z, axis: int = -1):
  """softmax(z)_i = e^{z_i} / Σ_j e^{z_j}; outputs in (0, 1) that sum to 1.

  Computed as e^{z_i - max z} / Σ_j e^{z_j - max z} (same value, no overflow).
  """
  z = z - jax.lax.stop_gradient(jnp.max(z, axis=axis, keepdims=True))
  e = jnp.exp(z)
  return e / jnp.sum(e, axis=axis, keepdims=True)


def swish(z):
  """swish(z) = z · σ(z) (a.k.a. SiLU), the activation of EfficientNet."""
  return z * jax.nn.sigmoid(z)


def gelu(z):
  """GELU(z) = z · Φ(z), Φ the standard normal CDF (exact erf form)."""
  return jax.nn.gelu(z, approximate=False)


def identity(z):
  """f(z) = z: no non-linearity (a purely linear model)."""
  return z


ACTIVATIONS = {
    'step': step, 'sigmoid': sigmoid, 'tanh': tanh, 'relu': relu,
    'leaky_relu': leaky_relu, 'softmax': softmax, 'swish': swish,
    'gelu': gelu, 'identity': identity,
}


def get(name: str, *, leaky_alpha: float = 0.01) -> Callable:
  """Looks an activation up by its config name (``config.model.activation``)."""
  if name not in ACTIVATIONS:
    raise UserError(
        f"unknown activation '{name}'; set config.model.activation to one of "
        f"{', '.join(sorted(ACTIVATIONS))}")
  if name == 'leaky_relu':
    if not 0 < leaky_alpha < 1:
      raise UserError(f'leaky_relu alpha must be in (0, 1), got {leaky_alpha}; '
                      'set config.model.leaky_alpha (typical 0.01)')
    return functools.partial(leaky_relu, alpha=leaky_alpha)
  return ACTIVATIONS[name]
