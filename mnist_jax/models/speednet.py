"""SpeedNet: a small CNN shaped for time-to-99 % on a CPU (configs/speedrun.py).

Per conv block b (F = features[b], K = kernel_sizes[b], P = paddings[b]):
  conv K×K, stride 1 -> [BatchNorm] -> ReLU
  -> max-pool 2×2
then flatten -> [Dense -> ReLU] per ``dense`` width -> Dense num_classes.
Default plan (conv output size (W − K + 2P)/S + 1, pool ⌊W/2⌋), 29,178 parameters,
1.92 M multiply-accumulates per image:

  28x28x1 -C3,P1-> 28x28x16 -pool-> 14x14x16 -C3,P1-> 14x14x32 -pool-> 7x7x32
  -C3,P1-> 7x7x64 -pool-> 3x3x64 -> 576 -> Dense 10

Small maps early, channels doubling as the resolution halves, batch norm
(x̂ = (x − μ_B)/√(σ²_B + ε), y = γx̂ + β) so that a high learning rate is stable
and one epoch reaches 99 %. Channel counts of 16 and more fill an AVX-512
register (16 float32); LeNet-5's 6 maps waste most of it. ``conv`` and
``max_pool`` are the layers, nn.Conv and nn.max_pool or their drop-in
replacements on the same parameters (nn/fast_layers.py), which models.layers_for
picks from config.model.conv_impl: configs/speedrun.py uses 'xla' (nn.Conv) with
loop_mode='step' (one dispatch per step, where nn.Conv is fastest on CPU); inside a
lax.scan 'patches' is faster (docs/speed.md, experiments/results/conv_in_scan.md).
"""
from typing import Any, Callable, Optional

import jax.numpy as jnp
from flax import linen as nn

ModuleDef = Any


class SpeedNet(nn.Module):
  """[conv -> BN? -> ReLU -> max-pool] per block, then a dense head."""
  num_classes: int = 10
  features: tuple = (16, 32, 64)    # F per conv block
  kernel_sizes: tuple = (3, 3, 3)   # K per conv block
  paddings: tuple = (1, 1, 1)       # P per conv block
  dense: tuple = ()                 # hidden widths of the head
  batch_norm: bool = True
  bn_momentum: float = 0.9
  axis_name: Optional[str] = None   # cross-device batch statistics under pmap
  dtype: Any = jnp.float32
  conv: ModuleDef = nn.Conv
  max_pool: Callable = nn.max_pool

  @nn.compact
  def __call__(self, x, train: bool = False):
    if not len(self.features) == len(self.kernel_sizes) == len(self.paddings):
      raise ValueError('SpeedNet: features, kernel_sizes and paddings need one entry '
                       f'per block, got {self.features}, {self.kernel_sizes}, '
                       f'{self.paddings}')
    x = x.astype(self.dtype)
    for i, (f, k, p) in enumerate(zip(self.features, self.kernel_sizes, self.paddings)):
      x = self.conv(f, (k, k), padding=p, use_bias=not self.batch_norm, dtype=self.dtype,
                    name=f'conv_{i}')(x)
      if self.batch_norm:
        x = nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum,
                         epsilon=1e-5, axis_name=self.axis_name, dtype=self.dtype,
                         name=f'bn_{i}')(x)
      # = max_pool(relu(x)): max and ReLU commute, and a quarter of the ReLUs.
      x = nn.relu(self.max_pool(x, (2, 2), strides=(2, 2)))
    x = x.reshape((x.shape[0], -1))
    for i, width in enumerate(self.dense):
      x = nn.relu(nn.Dense(width, dtype=self.dtype, name=f'dense_{i}')(x))
    x = nn.Dense(self.num_classes, dtype=self.dtype, name='output')(x)
    return x.astype(jnp.float32)
