"""SpeedNet: a small CNN shaped for time-to-99 % on a CPU (configs/speedrun.py).

Per conv block b (F = features[b], K = kernel_sizes[b], P = paddings[b]):
  conv K×K, stride 1 -> [BatchNorm] -> ReLU
  -> max-pool 2×2 (reshape + max: ``blocks.max_pool``)
then flatten -> [Dense -> ReLU] per ``dense`` width -> Dense num_classes.
Default plan (conv output size (W − K + 2P)/S + 1, pool ⌊W/2⌋), 29,178 parameters,
1.92 M multiply-accumulates per image:

  28x28x1 -C3,P1-> 28x28x16 -pool-> 14x14x16 -C3,P1-> 14x14x32 -pool-> 7x7x32
  -C3,P1-> 7x7x64 -pool-> 3x3x64 -> 576 -> Dense 10

Small maps early, channels doubling as the resolution halves, batch norm
(x̂ = (x − μ_B)/√(σ²_B + ε), y = γx̂ + β) so that a high learning rate is stable
and one epoch reaches 99 %. Channel counts of 16 and more fill an AVX-512
register (16 float32); LeNet-5's 6 maps waste most of it. ``conv_impl`` picks
the convolution on the same parameters: 'xla' (flax's nn.Conv), 'patches'
(patches + matmul, nn/conv.py), 'shift' (nn.Conv with the kernel gradient as
K·K shifted matmuls, nn/conv.py; stride 1) or 'auto' (patches on CPU, nn.Conv
elsewhere).
configs/speedrun.py uses 'xla' with loop_mode='step' (one dispatch per step,
where nn.Conv is fastest on CPU); inside a lax.scan 'patches' is faster
(docs/speed.md, experiments/results/conv_in_scan.md).
"""
from typing import Any, Optional

import jax.numpy as jnp
from flax import linen as nn

from mnist_jax.models import blocks
from mnist_jax.nn import conv as conv_lib


class SpeedNet(nn.Module):
  """[conv -> BN? -> ReLU -> max-pool] per block, then a dense head."""
  num_classes: int = 10
  features: tuple = (16, 32, 64)    # F per conv block
  kernel_sizes: tuple = (3, 3, 3)   # K per conv block
  paddings: tuple = (1, 1, 1)       # P per conv block
  dense: tuple = ()                 # hidden widths of the head
  batch_norm: bool = True
  bn_momentum: float = 0.9
  conv_impl: str = 'auto'  # 'auto' (CPU: patches) | 'xla' (nn.Conv) | 'patches' | 'shift'
  axis_name: Optional[str] = None   # cross-device batch statistics under pmap
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    if not len(self.features) == len(self.kernel_sizes) == len(self.paddings):
      raise ValueError('SpeedNet: features, kernel_sizes and paddings need one entry '
                       f'per block, got {self.features}, {self.kernel_sizes}, '
                       f'{self.paddings}')
    Conv = conv_lib.get(self.conv_impl)  # pylint: disable=invalid-name
    x = x.astype(self.dtype)
    for i, (f, k, p) in enumerate(zip(self.features, self.kernel_sizes, self.paddings)):
      x = Conv(f, (k, k), padding=p, use_bias=not self.batch_norm, dtype=self.dtype,
               name=f'conv_{i}')(x)
      if self.batch_norm:
        x = nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum,
                         epsilon=1e-5, axis_name=self.axis_name, dtype=self.dtype,
                         name=f'bn_{i}')(x)
      x = nn.relu(blocks.max_pool(x, 2))   # = max_pool(relu(x)): max and ReLU commute
    x = x.reshape((x.shape[0], -1))
    for i, width in enumerate(self.dense):
      x = nn.relu(nn.Dense(width, dtype=self.dtype, name=f'dense_{i}')(x))
    x = nn.Dense(self.num_classes, dtype=self.dtype, name='output')(x)
    return x.astype(jnp.float32)
