"""LeNet-5 (LeCun, Bottou, Bengio, Haffner 1998): the first practical CNN, for digits.

Innovation: local receptive fields + shared weights (convolution) + subsampling,
trained end to end by backpropagation.

Seven layers (the primer's count): C1 conv 5x5x6 -> S2 pool 2x2 -> C3 conv 5x5x16
-> S4 pool 2x2 -> C5 120 -> F6 84 -> output 10. Feature maps for 28x28 input
(the 'modern' variant pads C1 with P=2, which is the paper's 32x32 input):

  28x28x1 -C1-> 28x28x6 -S2-> 14x14x6 -C3-> 10x10x16 -S4-> 5x5x16 -C5-> 120 -F6-> 84 -> 10

Conv output size: (W - K + 2P)/S + 1, e.g. C3: (14 - 5 + 0)/1 + 1 = 10.

variant='modern': ReLU + max-pool (what people train today).
variant='classic': the paper's tanh, average-pool subsampling, and input
padded to 32x32; ``c3_table=True`` adds the paper's C3 partial connection table
(each of the 16 C3 maps sees only a subset of the 6 S2 maps, Table I).
Dropout p before F6 and the output (0 = the paper): y = m ⊙ x / (1 − p),
m_i ~ Bernoulli(1 − p), in training only.
"""
from typing import Any, Callable, Optional

import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from mnist_jax.nn import activations
from mnist_jax.nn.dropout import Dropout

ModuleDef = Any

# LeCun et al. 1998, Table I: which S2 maps (rows 0..5) feed each C3 map (cols 0..15).
C3_TABLE = np.array([
    [1, 0, 0, 0, 1, 1, 1, 0, 0, 1, 1, 1, 1, 0, 1, 1],
    [1, 1, 0, 0, 0, 1, 1, 1, 0, 0, 1, 1, 1, 1, 0, 1],
    [1, 1, 1, 0, 0, 0, 1, 1, 1, 0, 0, 1, 0, 1, 1, 1],
    [0, 1, 1, 1, 0, 0, 1, 1, 1, 1, 0, 0, 1, 0, 1, 1],
    [0, 0, 1, 1, 1, 0, 0, 1, 1, 1, 1, 0, 1, 1, 0, 1],
    [0, 0, 0, 1, 1, 1, 0, 0, 1, 1, 1, 1, 0, 1, 1, 1],
], dtype=np.float32)


class LeNet5(nn.Module):
  """LeNet-5; see the module docstring for the layer plan and shapes.

  ``conv`` and ``max_pool`` are the layers (nn.Conv, nn.max_pool or their drop-in
  replacements, models.layers_for); ``dropout_rate`` given to ``__call__`` is p for
  that call (an array under vmap: one p_k per trial), else the field's p.
  """
  num_classes: int = 10
  variant: str = 'modern'          # 'modern' (relu, max-pool) | 'classic' (tanh, avg-pool)
  activation: Optional[str] = None  # overrides the variant's activation
  leaky_alpha: float = 0.01
  c3_table: bool = False           # the paper's sparse C3 connections
  dropout_rate: float = 0.0        # before F6 and the output (0 = paper)
  features: tuple = (6, 16, 120, 84)
  dtype: Any = jnp.float32
  conv: ModuleDef = nn.Conv
  max_pool: Callable = nn.max_pool

  @nn.compact
  def __call__(self, x, train: bool = False, dropout_rate=None):
    if self.variant not in ('modern', 'classic'):
      raise ValueError(f"LeNet5.variant must be 'modern' or 'classic', got {self.variant!r}")
    classic = self.variant == 'classic'
    act = activations.get(self.activation or ('tanh' if classic else 'relu'),
                          leaky_alpha=self.leaky_alpha)
    subsample = nn.avg_pool if classic else self.max_pool
    p = self.dropout_rate if dropout_rate is None else dropout_rate
    c1, c3, c5, f6 = self.features
    x = x.astype(self.dtype)
    # C1: the paper feeds 32x32 images; padding 28x28 by P=2 is the same thing.
    x = act(self.conv(c1, (5, 5), padding=2, dtype=self.dtype, name='C1')(x))
    x = subsample(x, (2, 2), strides=(2, 2))                          # S2
    mask = None
    if self.c3_table:
      if (c1, c3) != (6, 16):
        raise ValueError('c3_table needs features[:2] == (6, 16)')
      mask = jnp.broadcast_to(jnp.asarray(C3_TABLE)[None, None], (5, 5, 6, 16))
    x = act(self.conv(c3, (5, 5), padding='VALID', dtype=self.dtype, mask=mask,
                      name='C3')(x))
    x = subsample(x, (2, 2), strides=(2, 2))                          # S4
    x = x.reshape((x.shape[0], -1))
    x = act(nn.Dense(c5, dtype=self.dtype, name='C5')(x))
    x = Dropout(p, deterministic=not train)(x)
    x = act(nn.Dense(f6, dtype=self.dtype, name='F6')(x))
    x = Dropout(p, deterministic=not train)(x)
    x = nn.Dense(self.num_classes, dtype=self.dtype, name='output')(x)
    return x.astype(jnp.float32)
