"""Convolutions as matrix products, drop-ins for nn.Conv: im2col, and a kernel gradient.

A K×K convolution with stride S, padding P over a C-channel input,

  FM[n, i, j, f] = Σ_{u,v,c} W[u, v, c, f] · x[n, S·i + u, S·j + v, c] + b[f],

output size per side (W − K + 2P)/S + 1, is a matrix product once the K·K·C
inputs under every window are laid out as a row (a 'patch'):

  patches[n, i, j, (u, v, c)] = x[n, S·i + u, S·j + v, c]      (N, H', W', K·K·C)
  FM = patches @ W.reshape(K·K·C, F) + b                        (N, H', W', F)

The patches are K·K strided slices of the zero-padded input, concatenated on
the channel axis: pure data movement. The backward pass is then two matmuls
(dW = patchesᵀ·dFM, dpatches = dFM·Wᵀ) plus the slices' adjoint (pad + add),
instead of XLA:CPU's generic backward-convolution kernels, which are the slow
part of small-CNN training on a CPU (docs/speed.md).

``ShiftConv`` keeps XLA's convolution for the forward pass and the input gradient
and computes only the kernel gradient as K·K matrix products of shifted views
(stride 1):

  dW[u, v, :, :] = x_pad[:, u:u+H', v:v+W', :].reshape(N·H'·W', C)ᵀ · dFM.reshape(N·H'·W', F)

XLA:CPU runs that gradient as a backward convolution 2-4x slower than the
forward one; for SpeedNet's 16- and 32-channel layers the K·K products are
1.3-1.7x faster (experiments/speed/conv_grad.py). With fewer input channels (a first layer on
the 1-channel image) XLA's own kernel gradient is faster and is kept.

``PatchConv`` and ``ShiftConv`` have the parameters of ``nn.Conv`` (``kernel`` (K, K, C, F),
``bias`` (F,), same initializers), so the three are interchangeable on the same
variables. Supported: 2-D, NHWC, padding 'SAME' | 'VALID' | int | ((lo, hi),
(lo, hi)), an optional weight ``mask``, strides (PatchConv only); no dilation or groups.
"""
import functools
from typing import Any, Callable, Optional, Sequence, Union

import jax
import jax.numpy as jnp
from flax import linen as nn

from mnist_jax.errors import UserError

Padding = Union[str, int, Sequence[Sequence[int]]]


def _pair(v) -> tuple:
  return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def explicit_padding(padding: Padding, size: tuple, kernel: tuple,
                     strides: tuple) -> tuple:
  """((top, bottom), (left, right)) zeros for 'SAME' | 'VALID' | int | pairs.

  'SAME' (XLA/TF rule): output ⌈W / S⌉, total padding max((⌈W/S⌉ − 1)·S + K − W, 0),
  the odd pixel at the bottom/right.
  """
  if isinstance(padding, str):
    if padding.upper() == 'VALID':
      return ((0, 0), (0, 0))
    if padding.upper() != 'SAME':
      raise ValueError(f"padding must be 'SAME', 'VALID', an int or pairs, got {padding!r}")
    pads = []
    for w, k, s in zip(size, kernel, strides):
      total = max((-(-w // s) - 1) * s + k - w, 0)
      pads.append((total // 2, total - total // 2))
    return tuple(pads)
  if isinstance(padding, int):
    return ((padding, padding), (padding, padding))
  return tuple(tuple(int(p) for p in pair) for pair in padding)


def extract_patches(x, kernel: tuple, strides: tuple = (1, 1),
                    padding: Padding = 'VALID'):
  """(N, H, W, C) -> (N, H', W', K_h·K_w·C), features ordered (u, v, c)."""
  (kh, kw), (sh, sw) = kernel, strides
  pads = explicit_padding(padding, x.shape[1:3], kernel, strides)
  if any(p for pair in pads for p in pair):
    x = jnp.pad(x, ((0, 0),) + pads + ((0, 0),))
  h_out = (x.shape[1] - kh) // sh + 1   # (W − K + 2P)/S + 1, P already added
  w_out = (x.shape[2] - kw) // sw + 1
  if (kh, kw) == (1, 1):
    return x[:, :(h_out - 1) * sh + 1:sh, :(w_out - 1) * sw + 1:sw, :]
  cols = [x[:, u:u + (h_out - 1) * sh + 1:sh, v:v + (w_out - 1) * sw + 1:sw, :]
          for u in range(kh) for v in range(kw)]
  return jnp.concatenate(cols, axis=-1)


def conv2d(x, kernel, bias=None, strides=(1, 1), padding: Padding = 'VALID'):
  """FM = patches(x) @ W.reshape(K·K·C, F) + b; ``kernel`` is (K_h, K_w, C, F)."""
  kh, kw, c, f = kernel.shape
  patches = extract_patches(x, (kh, kw), _pair(strides), padding)
  y = jnp.dot(patches, kernel.reshape(kh * kw * c, f))
  return y if bias is None else y + bias


class PatchConv(nn.Module):
  """nn.Conv's parameters and result, computed as patches + matmul."""
  features: int
  kernel_size: Sequence[int]
  strides: Union[int, Sequence[int]] = 1
  padding: Padding = 'SAME'
  use_bias: bool = True
  mask: Optional[Any] = None
  dtype: Optional[Any] = None
  param_dtype: Any = jnp.float32
  precision: Any = None
  kernel_init: Callable = nn.initializers.lecun_normal()
  bias_init: Callable = nn.initializers.zeros_init()

  def _variables(self, x):
    """(x, kernel (K, K, C, F) masked, bias or None), in the compute dtype."""
    shape = _pair(self.kernel_size) + (x.shape[-1], self.features)
    kernel = self.param('kernel', self.kernel_init, shape, self.param_dtype)
    if self.mask is not None:
      kernel = kernel * self.mask
    bias = (self.param('bias', self.bias_init, (self.features,), self.param_dtype)
            if self.use_bias else None)
    dtype = self.dtype or jnp.result_type(x, kernel)
    return x.astype(dtype), kernel.astype(dtype), None if bias is None else bias.astype(dtype)

  @nn.compact
  def __call__(self, x):
    x, kernel, bias = self._variables(x)
    patches = extract_patches(x, kernel.shape[:2], _pair(self.strides), self.padding)
    y = jnp.dot(patches, kernel.reshape(-1, self.features), precision=self.precision)
    return y if bias is None else y + bias


_DN = ('NHWC', 'HWIO', 'NHWC')
MIN_SHIFT_CHANNELS = 8   # below this many input channels XLA's kernel gradient is faster


def _xla_conv(x, kernel, pads):
  return jax.lax.conv_general_dilated(x, kernel, (1, 1), pads, dimension_numbers=_DN)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def shift_conv2d(x, kernel, pads):
  """Stride-1 convolution, zero padding ``pads`` ((top, bottom), (left, right)):
  XLA's forward, and dW as K·K shifted matrix products in the backward pass."""
  return _xla_conv(x, kernel, pads)


def _shift_fwd(x, kernel, pads):
  return _xla_conv(x, kernel, pads), (x, kernel)


def _shift_bwd(pads, residuals, dy):
  x, kernel = residuals
  kh, kw, c, f = kernel.shape
  if c < MIN_SHIFT_CHANNELS:
    return jax.vjp(lambda x_, k_: _xla_conv(x_, k_, pads), x, kernel)[1](dy)
  dx, = jax.vjp(lambda x_: _xla_conv(x_, kernel, pads), x)[1](dy)
  h, w = dy.shape[1:3]
  xp = jnp.pad(x, ((0, 0),) + tuple(pads) + ((0, 0),))
  d2 = dy.reshape(-1, f)
  dw = jnp.stack([jnp.dot(xp[:, u:u + h, v:v + w, :].reshape(-1, c).T, d2)
                  for u in range(kh) for v in range(kw)])
  return dx, dw.reshape(kh, kw, c, f).astype(kernel.dtype)


shift_conv2d.defvjp(_shift_fwd, _shift_bwd)


class ShiftConv(PatchConv):
  """nn.Conv's parameters and forward pass (stride 1); the kernel gradient as
  K·K shifted matrix products (``shift_conv2d``). ``precision`` is not used."""

  @nn.compact
  def __call__(self, x):
    if _pair(self.strides) != (1, 1):
      raise UserError(f"conv_impl='shift' supports stride 1 only, got strides "
                      f"{self.strides}; use conv_impl='xla' or 'patches' for this model")
    x, kernel, bias = self._variables(x)
    pads = explicit_padding(self.padding, x.shape[1:3], kernel.shape[:2], (1, 1))
    y = shift_conv2d(x, kernel, pads)
    return y if bias is None else y + bias


def get(impl: str) -> type:
  """The conv Module class for ``impl``: 'xla' (nn.Conv), 'patches' (PatchConv),
  'shift' (ShiftConv, stride 1 only) or 'auto': PatchConv on CPU, nn.Conv
  elsewhere (cuDNN / the TPU's conv units).

  Why 'auto' picks patches on CPU: inside a while loop (``lax.scan``, how
  engine/driver.py runs an epoch) XLA:CPU's convolutions run 5-14x slower than the
  same convolutions in a standalone jit; patches + matmul do not
  (docs/speed.md, ``experiments/speed/conv_in_scan.py``).
  """
  if impl == 'auto':
    impl = 'patches' if jax.default_backend() == 'cpu' else 'xla'
  if impl == 'xla':
    return nn.Conv
  if impl == 'patches':
    return PatchConv
  if impl == 'shift':
    return ShiftConv
  raise UserError(f"unknown conv_impl '{impl}'; set config.model.conv_impl to 'auto', "
                  "'xla', 'patches' or 'shift'")
