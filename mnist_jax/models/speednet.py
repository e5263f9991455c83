"""SpeedNet: a small CNN shaped for time-to-99 % on a CPU (configs/speedrun.py).

Per conv block b (F = features[b], K = kernel_sizes[b], P = paddings[b]):
  conv K×K, stride 1 -> [BatchNorm] -> max-pool 2×2 -> ReLU
  or, with pool_first, conv -> max-pool 2×2 -> [BatchNorm] -> ReLU
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

Options of the speed levers (docs/speed.md):
  pool_first        batch norm after the pool (airbench's order): μ_B and σ²_B are
                    taken over the pooled maps, and its forward and backward touch a
                    quarter of the values, the memory-bound part of a step on the CPU;
                    the same parameters and multiply-accumulates
  whitening         a (K, K, C, F') kernel (nested tuple, nn/whitening.filters): the
                    first conv's first F' filters start as the patch-whitening
                    filters ±w_i, the rest as usual
  freeze_whitening  the first conv is that fixed kernel (F' = features[0]), a
                    constant with no parameters and no kernel gradient
  tta               eval-time shifts ((dy, dx), ...): with train=False the logits are
                    the mean of f(x) and f(shift(x)) over the shifts, shift(x) moving
                    the image by dy rows and dx columns (edge pixels repeated into the
                    gap); train=True ignores it
"""
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

ModuleDef = Any


class SpeedNet(nn.Module):
  """[conv -> BN? -> max-pool -> ReLU] (or conv -> max-pool -> BN? -> ReLU) per
  block, then a dense head."""
  num_classes: int = 10
  features: tuple = (16, 32, 64)    # F per conv block
  kernel_sizes: tuple = (3, 3, 3)   # K per conv block
  paddings: tuple = (1, 1, 1)       # P per conv block
  dense: tuple = ()                 # hidden widths of the head
  batch_norm: bool = True
  pool_first: bool = False          # conv -> max-pool -> BN -> ReLU
  bn_momentum: float = 0.9
  axis_name: Optional[str] = None   # cross-device batch statistics under pmap
  dtype: Any = jnp.float32
  whitening: tuple = ()             # (K, K, C, F') first-conv kernel, nested tuple
  freeze_whitening: bool = False
  tta: tuple = ()                   # eval-time (dy, dx) shifts
  conv: ModuleDef = nn.Conv
  max_pool: Callable = nn.max_pool

  @nn.compact
  def __call__(self, x, train: bool = False):
    if not len(self.features) == len(self.kernel_sizes) == len(self.paddings):
      raise ValueError('SpeedNet: features, kernel_sizes and paddings need one entry '
                       f'per block, got {self.features}, {self.kernel_sizes}, '
                       f'{self.paddings}')
    x = x.astype(self.dtype)
    if self.tta and not train:   # one pass over the N·(1 + S) views, then the mean
      views = [x] + [shift(x, dy, dx) for dy, dx in self.tta]
      logits = self.logits(jnp.concatenate(views), train)
      return jnp.mean(logits.reshape(len(views), x.shape[0], -1), axis=0)
    return self.logits(x, train)

  def logits(self, x, train: bool):
    for i, (f, k, p) in enumerate(zip(self.features, self.kernel_sizes, self.paddings)):
      x = self.first_conv(x, f, k, p) if i == 0 else self.conv(
          f, (k, k), padding=p, use_bias=not self.batch_norm, dtype=self.dtype,
          name=f'conv_{i}')(x)
      norm = nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum,
                          epsilon=1e-5, axis_name=self.axis_name, dtype=self.dtype,
                          name=f'bn_{i}') if self.batch_norm else (lambda y: y)
      pool = lambda y: self.max_pool(y, (2, 2), strides=(2, 2))
      x = norm(pool(x)) if self.pool_first else pool(norm(x))
      # ReLU after the pool = before it (max and ReLU commute), on a quarter of the values
      x = nn.relu(x)
    x = x.reshape((x.shape[0], -1))
    for i, width in enumerate(self.dense):
      x = nn.relu(nn.Dense(width, dtype=self.dtype, name=f'dense_{i}')(x))
    x = nn.Dense(self.num_classes, dtype=self.dtype, name='output')(x)
    return x.astype(jnp.float32)

  def first_conv(self, x, f: int, k: int, p):
    """conv_0: the plain conv, or one whose kernel starts as (or, frozen, is) the
    whitening filters of ``whitening``."""
    if not self.whitening:
      return self.conv(f, (k, k), padding=p, use_bias=not self.batch_norm,
                       dtype=self.dtype, name='conv_0')(x)
    white = np.asarray(self.whitening, np.float32)
    if white.shape[:2] != (k, k) or white.shape[3] > f:
      raise ValueError(f'SpeedNet: whitening kernel {white.shape} does not fit conv_0 '
                       f'({k}, {k}, C, {f})')
    if self.freeze_whitening:
      if white.shape[3] != f:
        raise ValueError(f'SpeedNet: a frozen whitening needs all {f} filters of conv_0, '
                         f'got {white.shape[3]}')
      pad = ((p, p), (p, p)) if isinstance(p, int) else p
      return jax.lax.conv_general_dilated(
          x, jnp.asarray(white, self.dtype), (1, 1), pad,
          dimension_numbers=('NHWC', 'HWIO', 'NHWC'))

    def init(key, shape, dtype=jnp.float32):
      kernel = nn.initializers.lecun_normal()(key, shape, dtype)
      return kernel.at[..., :white.shape[3]].set(jnp.asarray(white, dtype))
    return self.conv(f, (k, k), padding=p, use_bias=not self.batch_norm,
                     dtype=self.dtype, kernel_init=init, name='conv_0')(x)


def shift(x, dy: int, dx: int):
  """Images (N, H, W, C) moved by dy rows and dx columns: out[y, x] = in[y − dy, x − dx],
  the pixels that enter at an edge copies of that edge's."""
  n, h, w, c = x.shape
  py, px = abs(dy), abs(dx)
  padded = jnp.pad(x, ((0, 0), (py, py), (px, px), (0, 0)), mode='edge')
  return padded[:, py - dy:py - dy + h, px - dx:px - dx + w, :]
