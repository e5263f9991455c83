"""Losses of the primer, per example, from logits z and one-hot targets y.

The network's last layer outputs logits z ∈ R^K (K = 10 digits); each loss says
how the prediction ŷ is read off z:

| name | formula (primer)                       | ŷ from logits       |
|------|----------------------------------------|---------------------|
| cce  | -Σ_k y_k log ŷ_k                       | softmax(z)          |
| cce_smooth | cce on ỹ = (1-α) y + α/K, α = 0.1 | softmax(z)          |
| bce  | -Σ_k [y_k log ŷ_k + (1-y_k) log(1-ŷ_k)] | σ(z_k), one-vs-rest |
| mse  | (1/K) Σ_k (y_k - ŷ_k)^2                | softmax(z)          |
| mae  | (1/K) Σ_k |y_k - ŷ_k|                  | softmax(z)          |

CCE and BCE use the algebraically equal log-space forms (log-sum-exp,
softplus), so they never take log(0). The batch loss is the mean over examples.
"""
from typing import Callable

import jax
import jax.numpy as jnp

from mnist_jax.errors import UserError


def categorical_cross_entropy(logits, targets):
  """CCE = -Σ_k y_k log softmax(z)_k, with log softmax(z)_k = z_k - logsumexp(z)."""
  log_p = logits - jax.nn.logsumexp(logits, axis=-1, keepdims=True)
  return -jnp.sum(targets * log_p, axis=-1)


SMOOTHING = 0.1   # α of 'cce_smooth' (Szegedy et al. 2016, Inception v3)


def smooth_labels(targets, alpha: float = SMOOTHING):
  """ỹ = (1 − α) y + α/K: each one-hot target gives mass α to the K classes evenly."""
  return (1.0 - alpha) * targets + alpha / targets.shape[-1]


def smoothed_cross_entropy(logits, targets):
  """CCE against smoothed targets, -Σ_k ỹ_k log softmax(z)_k with ỹ = smooth_labels(y):
  the optimum is a finite logit gap, log((1 − α + α/K)/(α/K)), so a fit of a few
  hundred steps does not spend them on growing the logits of examples it has right."""
  return categorical_cross_entropy(logits, smooth_labels(targets))


def binary_cross_entropy(logits, targets):
  """BCE summed over K one-vs-rest outputs ŷ_k = σ(z_k).

  -[y log σ(z) + (1-y) log(1-σ(z))] = softplus(z) - y z   (log σ(z) = -softplus(-z)).
  """
  per_class = jax.nn.softplus(logits) - targets * logits
  return jnp.sum(per_class, axis=-1)


def mean_squared_error(logits, targets):
  """MSE = (1/K) Σ_k (y_k - ŷ_k)^2 with ŷ = softmax(z)."""
  return jnp.mean((targets - jax.nn.softmax(logits, axis=-1)) ** 2, axis=-1)


def mean_absolute_error(logits, targets):
  """MAE = (1/K) Σ_k |y_k - ŷ_k| with ŷ = softmax(z); robust to outliers."""
  return jnp.mean(jnp.abs(targets - jax.nn.softmax(logits, axis=-1)), axis=-1)


LOSSES = {
    'cce': categorical_cross_entropy,
    'cce_smooth': smoothed_cross_entropy,
    'bce': binary_cross_entropy,
    'mse': mean_squared_error,
    'mae': mean_absolute_error,
}


def get(name: str) -> Callable:
  """Looks a loss up by its config name (``config.loss``)."""
  if name not in LOSSES:
    raise UserError(f"unknown loss '{name}'; set config.loss to one of "
                    f"{', '.join(LOSSES)}")
  return LOSSES[name]
