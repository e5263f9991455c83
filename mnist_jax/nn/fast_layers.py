"""Drop-in replacements for nn.Conv and nn.max_pool: the same call, parameters and
numbers, computed with operations that XLA:CPU runs faster (docs/speed.md).

A model takes its convolution and its max-pool as fields (``conv: ModuleDef =
nn.Conv``, ``max_pool: Callable = nn.max_pool``, as Flax's ResNet takes ``conv``);
``models.layers_for`` picks these replacements from config.model.conv_impl and the
platform. Each one keeps the primitive's signature and, for the convolutions, its
parameter tree (``kernel`` (K_h, K_w, C, F), ``bias`` (F,), the same initializers),
so the same variables give the same outputs and gradients with either, and a
checkpoint moves between them.

Convolution. A K×K kernel with F filters, stride S, padding P, over a C-channel input:

  FM[n, i, j, f] = Σ_{u,v,c} K[u, v, c, f] · x[n, S·i + u, S·j + v, c] + b[f],

output size per side (W − K + 2P)/S + 1.

``PatchConv`` lays the K·K·C inputs under every window out as one row (a 'patch'),
which makes the convolution one matrix product:

  patches[n, i, j, (u, v, c)] = x[n, S·i + u, S·j + v, c]      (N, H', W', K·K·C)
  FM = patches @ K.reshape(K·K·C, F) + b                        (N, H', W', F)

The patches are K·K strided slices of the zero-padded input, concatenated on the
channel axis: pure data movement. Its backward pass is two matrix products
(dK = patchesᵀ·dFM, dpatches = dFM·Kᵀ) plus the slices' adjoint (pad + add), where
XLA:CPU would run its generic backward-convolution kernels, and inside a
``lax.scan`` (how the trainer runs an epoch) XLA:CPU's convolutions are slower than
in a standalone jit while a matrix product is not. Under ``jax.vmap`` over K models
the product becomes a batched matrix product, where a vmapped ``nn.Conv`` becomes a
grouped convolution.

``ShiftConv`` keeps XLA's convolution for the forward pass and the input gradient
and computes the kernel gradient as K·K matrix products of shifted views (stride 1):

  dK[u, v, :, :] = x_pad[:, u:u+H', v:v+W', :].reshape(N·H'·W', C)ᵀ · dFM.reshape(N·H'·W', F)

which XLA:CPU runs as a backward convolution slower than the forward one. With few
input channels (a first layer on the 1-channel image) XLA's own kernel gradient is
faster and is kept.

Supported: 2-D, NHWC, padding 'SAME' | 'VALID' | int | ((lo, hi), (lo, hi)), a weight
``mask``, strides (PatchConv only); no dilation or feature groups (nn.Conv has them).

Max-pooling over K×K windows, stride S, padding P (−∞ on the border):

  y[n, i, j, c] = max_{u,v < K} x_pad[n, S·i + u, S·j + v, c]

``max_pool`` gives nn.max_pool's values: with S = K and padding 'VALID' (or zero
pairs) as a reshape + max with nn.max_pool's gradient, otherwise separably (the maximum over K
shifted rows, then over K shifted columns; at a tie jnp.maximum shares ∂L/∂y between
the tied elements, where nn.max_pool gives it to one). Both avoid XLA:CPU's gradient
of ``reduce_window`` (select-and-scatter).
"""
import functools
from typing import Sequence, Union

import jax
import jax.numpy as jnp
from flax import linen as nn

from mnist_jax.errors import UserError

Padding = Union[str, int, Sequence[Sequence[int]]]
MIN_SHIFT_CHANNELS = 8   # below this many input channels XLA's kernel gradient is faster


def _pair(v) -> tuple:
  return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def explicit_padding(padding: Padding, size: tuple, kernel: tuple,
                     strides: tuple) -> tuple:
  """((top, bottom), (left, right)) for 'SAME' | 'VALID' | int | pairs.

  'SAME' (XLA's rule): output ⌈W / S⌉, total padding max((⌈W/S⌉ − 1)·S + K − W, 0),
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


class PatchConv(nn.Conv):
  """nn.Conv (its fields, parameters and result), computed as patches + one matmul."""

  def _variables(self, inputs):
    """(x, kernel (K, K, C, F) masked, bias or None) in the compute dtype, made as
    nn.Conv makes them; refuses what the patches do not compute."""
    unsupported = {'input_dilation': self.input_dilation, 'kernel_dilation': self.kernel_dilation,
                   'feature_group_count': self.feature_group_count}
    unsupported = [k for k, v in unsupported.items() if v not in (None, 1, (1, 1), [1, 1])]
    kernel_size = ((self.kernel_size,) if isinstance(self.kernel_size, int)
                   else tuple(self.kernel_size))   # nn.Conv's rule: an int is a 1-D kernel
    if unsupported or len(kernel_size) != 2 or inputs.ndim != 4:
      raise ValueError(f'{type(self).__name__} computes 2-D convolutions of NHWC inputs '
                       f"without {', '.join(unsupported) or 'dilation or groups'}; "
                       'use nn.Conv for this layer')
    shape = kernel_size + (inputs.shape[-1], self.features)
    if self.mask is not None and self.mask.shape != shape:
      raise ValueError(f'mask shape {self.mask.shape} must be the kernel shape {shape}')
    kernel = self.param('kernel', self.kernel_init, shape, self.param_dtype)
    if self.mask is not None:
      kernel = kernel * self.mask
    bias = (self.param('bias', self.bias_init, (self.features,), self.param_dtype)
            if self.use_bias else None)
    return self.promote_dtype(inputs, kernel, bias, dtype=self.dtype)

  @nn.compact
  def __call__(self, inputs):
    x, kernel, bias = self._variables(inputs)
    patches = extract_patches(x, kernel.shape[:2], _pair(self.strides or 1), self.padding)
    y = jnp.dot(patches, kernel.reshape(-1, self.features), precision=self.precision)
    return y if bias is None else y + bias


_DN = ('NHWC', 'HWIO', 'NHWC')


def _xla_conv(x, kernel, pads):
  return jax.lax.conv_general_dilated(x, kernel, (1, 1), pads, dimension_numbers=_DN)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def shift_conv2d(x, kernel, pads):
  """Stride-1 convolution, zero padding ``pads`` ((top, bottom), (left, right)):
  XLA's forward, and dK as K·K shifted matrix products in the backward pass."""
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
  """nn.Conv's fields, parameters and forward pass (stride 1); the kernel gradient
  as K·K shifted matrix products (``shift_conv2d``). ``precision`` is not used."""

  @nn.compact
  def __call__(self, inputs):
    if _pair(self.strides or 1) != (1, 1):
      raise UserError(f"conv_impl='shift' supports stride 1 only, got strides "
                      f"{self.strides}; use conv_impl='xla' or 'patches' for this model")
    x, kernel, bias = self._variables(inputs)
    pads = explicit_padding(self.padding, x.shape[1:3], kernel.shape[:2], (1, 1))
    y = shift_conv2d(x, kernel, pads)
    return y if bias is None else y + bias


def max_pool(inputs, window_shape, strides=None, padding='VALID'):
  """nn.max_pool(inputs, window_shape, strides, padding) of NHWC inputs: the same
  values, the same defaults (strides (1, 1), padding 'VALID'), −∞ padding."""
  window = tuple(window_shape)
  strides = tuple(strides or (1, 1))
  pads = explicit_padding(padding, inputs.shape[1:3], window, strides)
  valid = padding == 'VALID' if isinstance(padding, str) else not any(
      p for pair in pads for p in pair)
  if strides == window and valid:
    n, h, w, c = inputs.shape
    kh, kw = window
    return _window_max(inputs[:, :h - h % kh, :w - w % kw, :], window)
  x = inputs
  if any(p for pair in pads for p in pair):
    x = jnp.pad(x, ((0, 0), *pads, (0, 0)), constant_values=-jnp.inf)
  for axis, k, s in zip((1, 2), window, strides):
    n = (x.shape[axis] - k) // s + 1
    taps = [jax.lax.slice_in_dim(x, i, i + s * (n - 1) + 1, s, axis) for i in range(k)]
    x = functools.reduce(jnp.maximum, taps)
  return x


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _window_max(x, window: tuple):
  """Non-overlapping K_h×K_w max-pool as reshape + max (output H/K_h × W/K_w).

  Gradient: nn.max_pool's. ∂L/∂y of a window goes to one element, the first (in
  row-major order) equal to the window's maximum, which is the one XLA's
  select-and-scatter picks. Ties are common on MNIST: a window on the empty
  background holds one value after a bias or batch norm; giving ∂L/∂y to each tied
  element would count it K_h·K_w times in the gradient of that bias. ``jnp.max``'s
  own rule shares it between the ties (a sum and a division more).

  The element is found by a running (maximum, position) over the window's
  elements, never by testing x against the forward's y: XLA may compute x (say, a
  batch norm's output) again for the backward pass, a rounding away from the x
  the forward's max saw, and an equality test would then find no maximum in a
  window and drop its gradient; a position is always one element.
  """
  (kh, kw), (n, h, w, c) = window, x.shape
  return x.reshape(n, h // kh, kh, w // kw, kw, c).max(axis=(2, 4))


def _window_max_fwd(x, window):
  return _window_max(x, window), x


def _window_max_bwd(window, x, g):
  (kh, kw), (n, h, w, c) = window, x.shape
  windows = x.reshape(n, h // kh, kh, w // kw, kw, c)
  best, first = windows[:, :, 0, :, 0], jnp.zeros(g.shape, jnp.int32)
  for p in range(1, kh * kw):   # row-major; a tie keeps the earlier element
    tap = windows[:, :, p // kw, :, p % kw]
    later = tap > best
    best, first = jnp.where(later, tap, best), jnp.where(later, p, first)
  position = jnp.arange(kh * kw, dtype=jnp.int32).reshape(1, 1, kh, 1, kw, 1)
  up = lambda a: a[:, :, None, :, None, :]
  return (jnp.where(position == up(first), up(g), jnp.zeros((), g.dtype)).reshape(x.shape),)


_window_max.defvjp(_window_max_fwd, _window_max_bwd)
