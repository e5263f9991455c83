"""Multi-layer perceptron: stacked fully connected layers on the flattened image.

Each layer computes a = f(W x + b); layer l has in_l · out_l weights + out_l
biases. The primer's example 784 -> 500 -> 10: the first layer alone has
784 · 500 = 392,000 weights (+ 500 biases), the output layer 5,000 + 10,
397,510 parameters in all — why images want convolutions instead (cnn.py).

  x (N, 28, 28, 1) -> flatten 784 -> [Dense h_i -> f -> Dropout p] per hidden -> Dense 10

Depth and width: ``hidden`` (a tuple of layer widths; () is the perceptron);
f: ``activation`` (any name of nn/activations.py); p: ``dropout_rate``
(inverted dropout: in training each unit is zeroed with probability p and the
survivors scaled by 1/(1-p); evaluation uses all units unscaled). A
``dropout_rate`` given to ``__call__`` is p for that call (an array under vmap: one
p_k per trial).
"""
from typing import Any

import jax.numpy as jnp
from flax import linen as nn

from mnist_jax.nn import activations
from mnist_jax.nn.dropout import Dropout


class MLP(nn.Module):
  """784 -> hidden... -> num_classes; see the module docstring."""
  num_classes: int = 10
  hidden: tuple = (500,)
  activation: str = 'relu'
  leaky_alpha: float = 0.01
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False, dropout_rate=None):
    act = activations.get(self.activation, leaky_alpha=self.leaky_alpha)
    p = self.dropout_rate if dropout_rate is None else dropout_rate
    x = x.reshape((x.shape[0], -1)).astype(self.dtype)
    for i, width in enumerate(self.hidden):
      x = act(nn.Dense(width, dtype=self.dtype, name=f'hidden_{i}')(x))
      x = Dropout(p, deterministic=not train)(x)
    x = nn.Dense(self.num_classes, dtype=self.dtype, name='output')(x)
    return x.astype(jnp.float32)
