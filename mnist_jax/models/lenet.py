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
"""
from typing import Any, Optional

import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from mnist_jax.models import blocks
from mnist_jax.nn import activations
from mnist_jax.nn import conv as conv_lib

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
  """LeNet-5; see the module docstring for the layer plan and shapes."""
  num_classes: int = 10
  variant: str = 'modern'          # 'modern' (relu, max-pool) | 'classic' (tanh, avg-pool)
  activation: Optional[str] = None  # overrides the variant's activation
  leaky_alpha: float = 0.01
  c3_table: bool = False           # the paper's sparse C3 connections
  dropout_rate: float = 0.0        # before F6 and the output (0 = paper)
  features: tuple = (6, 16, 120, 84)
  dtype: Any = jnp.float32
  conv_impl: str = 'auto'  # 'auto' (CPU: patches) | 'xla' (nn.Conv) | 'patches' (nn/conv.py)

  @nn.compact
  def __call__(self, x, train: bool = False):
    if self.variant not in ('modern', 'classic'):
      raise ValueError(f"LeNet5.variant must be 'modern' or 'classic', got {self.variant!r}")
    classic = self.variant == 'classic'
    act = activations.get(self.activation or ('tanh' if classic else 'relu'),
                          leaky_alpha=self.leaky_alpha)
    if classic:
      pool = lambda x: nn.avg_pool(x, (2, 2), strides=(2, 2))
    else:   # nn.max_pool's values, an element-wise gradient (blocks.max_pool)
      pool = lambda x: blocks.max_pool(x, 2)
    Conv = conv_lib.get(self.conv_impl)  # pylint: disable=invalid-name
    c1, c3, c5, f6 = self.features
    x = x.astype(self.dtype)
    # C1: the paper feeds 32x32 images; padding 28x28 by P=2 is the same thing.
    x = act(Conv(c1, (5, 5), padding=2, dtype=self.dtype, name='C1')(x))
    x = pool(x)                                                      # S2
    if self.c3_table:
      if (c1, c3) != (6, 16):
        raise ValueError('c3_table needs features[:2] == (6, 16)')
      mask = jnp.asarray(C3_TABLE)[None, None]                       # (1,1,6,16)
      conv = Conv(c3, (5, 5), padding='VALID', dtype=self.dtype, name='C3',
                     mask=jnp.broadcast_to(mask, (5, 5, 6, 16)))
    else:
      conv = Conv(c3, (5, 5), padding='VALID', dtype=self.dtype, name='C3')
    x = act(conv(x))
    x = pool(x)                                                      # S4
    x = x.reshape((x.shape[0], -1))
    x = act(nn.Dense(c5, dtype=self.dtype, name='C5')(x))
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    x = act(nn.Dense(f6, dtype=self.dtype, name='F6')(x))
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    x = nn.Dense(self.num_classes, dtype=self.dtype, name='output')(x)
    return x.astype(jnp.float32)
