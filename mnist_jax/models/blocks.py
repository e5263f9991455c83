"""Building blocks shared by the zoo (AlexNet ... EfficientNet).

Conv output size with kernel K, stride S, padding P on a W x W map:

    W_out = floor((W - K + 2P) / S) + 1

``ConvBNAct`` pads P = K // 2 by default, so a stride-1 conv keeps W and a
stride-2 conv gives ceil(W / 2) (28 -> 14 -> 7 -> 4 -> 2 -> 1).

| block          | formula                                                    |
|----------------|------------------------------------------------------------|
| ConvBNAct      | y = act(BN(W * x)); groups = C gives depthwise conv        |
| DepthwiseConv  | y_c = Σ_{i,j} w_{ijc} x_{c}[S·h + i - P, S·w + j - P]      |
| batch norm     | y = γ (x - μ_B) / sqrt(σ²_B + ε) + β, running μ, σ² (0.9)  |
| SqueezeExcite  | s = σ(W₂ act(W₁ GAP(x))), y = s ⊙ x (channel gates)        |
| DropPath       | y = x · b / (1 - p), b ~ Bernoulli(1 - p) per example      |
| ClassifierHead | pool/flatten -> [Dense -> act -> dropout]* -> Dense -> z   |

All modules compute in ``dtype`` (bfloat16 for mixed precision) with float32
parameters; batch norm uses ``axis_name`` for cross-device statistics. The models
take their convolution as ``conv`` (nn.Conv or a drop-in replacement,
nn/fast_layers.py) and pass it to ``ConvBNAct``; max-pooling is the model's
``max_pool`` field (nn.max_pool or its replacement).

Two bases declare once the fields their subclasses share: ``Layer`` for a net's
repeated block (activation, batch-norm axis, dtype, conv; keyword-only, so the
block's own fields stay positional) and ``ConvNet`` for ResNet, DenseNet, GoogLeNet
and VGG (num_classes, activation, leaky_alpha, dropout_rate, axis_name and dtype,
which are config.model options, and the layers conv and max_pool, which
config.model.conv_impl sets).
"""
import dataclasses
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
from flax import linen as nn

from mnist_jax.nn import activations

ModuleDef = Any


def conv_output_size(w: int, k: int, s: int = 1, p: int = 0) -> int:
  """W_out = floor((W - K + 2P) / S) + 1."""
  return (w - k + 2 * p) // s + 1


def batch_norm(train: bool, axis_name: Optional[str], dtype: Any,
               name: Optional[str] = None, scale_init=nn.initializers.ones):
  """nn.BatchNorm with the zoo's settings: running averages with momentum 0.9."""
  return nn.BatchNorm(use_running_average=not train, axis_name=axis_name,
                      momentum=0.9, epsilon=1e-5, dtype=dtype, name=name,
                      scale_init=scale_init)


class Layer(nn.Module):
  """A block's computing fields, keyword-only: act, BN's axis_name, dtype, conv."""
  _: dataclasses.KW_ONLY
  act: Callable = nn.relu
  axis_name: Optional[str] = None    # cross-device batch statistics under pmap
  dtype: Any = jnp.float32
  conv: ModuleDef = nn.Conv

  def conv_kw(self) -> dict:
    """The fields a block hands on to its ``ConvBNAct`` layers."""
    return dict(axis_name=self.axis_name, dtype=self.dtype, conv=self.conv)


class ConvNet(nn.Module):
  """The fields ResNet, DenseNet, GoogLeNet and VGG share; ``activation_fn()`` is
  the activation they name."""
  num_classes: int = 10
  activation: str = 'relu'
  leaky_alpha: float = 0.01
  dropout_rate: float = 0.0          # before the classifier
  axis_name: Optional[str] = None    # cross-device batch statistics under pmap
  dtype: Any = jnp.float32
  conv: ModuleDef = nn.Conv
  max_pool: Callable = nn.max_pool

  def activation_fn(self) -> Callable:
    return activations.get(self.activation, leaky_alpha=self.leaky_alpha)

  def block_kw(self) -> dict:
    """The ``Layer`` fields of this net's blocks (and its ``ConvBNAct`` layers)."""
    return dict(act=self.activation_fn(), axis_name=self.axis_name, dtype=self.dtype,
                conv=self.conv)


class DepthwiseConv(nn.Module):
  """Depthwise K x K conv (one filter per channel, groups = C), no bias.

  y_c[h, w] = Σ_{i,j < K} w[i, j, 0, c] · x_pad,c[S·h + i, S·w + j], written as a
  sum of K² shifted, strided slices: the same result and the same (K, K, 1, C)
  kernel as nn.Conv(feature_group_count=C), but XLA's CPU backend runs it (and
  its gradient) many times faster than a grouped convolution. K·K·C params.
  """
  kernel_size: int = 3
  strides: int = 1
  padding: Optional[int] = None     # None: P = K // 2
  kernel_init: Callable = nn.initializers.kaiming_normal()
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    k, s, c = self.kernel_size, self.strides, x.shape[-1]
    p = k // 2 if self.padding is None else self.padding
    w = self.param('kernel', self.kernel_init, (k, k, 1, c)).astype(self.dtype)
    x = jnp.pad(x, [(0, 0), (p, p), (p, p), (0, 0)])
    ho = conv_output_size(x.shape[1], k, s)
    wo = conv_output_size(x.shape[2], k, s)
    y = 0
    for i in range(k):
      for j in range(k):
        y = y + x[:, i:i + s * (ho - 1) + 1:s, j:j + s * (wo - 1) + 1:s] * w[i, j, 0]
    return y


class ConvBNAct(nn.Module):
  """K x K conv (stride S, padding P, `groups` channel groups) + BN + activation.

  ``order='conv_bn_act'`` is the usual post-activation; ``'bn_act_conv'`` is the
  pre-activation DenseNet uses. Without BN the conv has a bias. Parameters:
  K·K·(C_in/groups)·F weights (+ F bias without BN, + 2C BN γ, β).
  """
  features: int
  kernel_size: int = 3
  strides: int = 1
  padding: Any = None               # None: P = K // 2
  groups: int = 1                   # groups = C_in = F: depthwise conv
  use_bn: bool = True
  act: Optional[Callable] = None    # None: no activation (identity)
  order: str = 'conv_bn_act'        # | 'bn_act_conv'
  bn_scale_init: Callable = nn.initializers.ones
  axis_name: Optional[str] = None
  dtype: Any = jnp.float32
  conv: ModuleDef = nn.Conv         # groups > 1 that is not depthwise: nn.Conv

  @nn.compact
  def __call__(self, x, train: bool = False):
    k, p = self.kernel_size, self.padding
    p = k // 2 if p is None else p
    if self.groups > 1 and self.groups == x.shape[-1] == self.features:
      conv = DepthwiseConv(k, self.strides, p, dtype=self.dtype, name='conv')
    else:                               # (no bias in the depthwise conv, BN or not)
      kw = dict(strides=self.strides, use_bias=not self.use_bn, dtype=self.dtype,
                padding=p if isinstance(p, str) else [(p, p), (p, p)],
                kernel_init=nn.initializers.kaiming_normal(), name='conv')
      if self.groups > 1:
        conv = nn.Conv(self.features, (k, k), feature_group_count=self.groups, **kw)
      else:
        conv = self.conv(self.features, (k, k), **kw)
    act = self.act or (lambda z: z)
    if self.order == 'bn_act_conv':
      if self.use_bn:
        x = batch_norm(train, self.axis_name, self.dtype, 'bn')(x)
      return conv(act(x))
    if self.order != 'conv_bn_act':
      raise ValueError(f"ConvBNAct.order must be 'conv_bn_act' or 'bn_act_conv', "
                       f'got {self.order!r}')
    x = conv(x)
    if self.use_bn:
      x = batch_norm(train, self.axis_name, self.dtype, 'bn',
                     self.bn_scale_init)(x)
    return act(x)


class SqueezeExcite(nn.Module):
  """Squeeze-and-excitation (Hu et al. 2018): learned per-channel gates.

  squeeze z = GAP(x) ∈ R^C; excite s = σ(W₂ act(W₁ z + b₁) + b₂) with
  W₁: C -> r, W₂: r -> C; output s ⊙ x. Parameters: C·r + r + r·C + C.
  """
  reduced_features: int
  act: Callable = nn.swish
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    s = jnp.mean(x, axis=(1, 2), keepdims=True)
    s = self.act(nn.Dense(self.reduced_features, dtype=self.dtype,
                          name='reduce')(s))
    s = jax.nn.sigmoid(nn.Dense(c, dtype=self.dtype, name='expand')(s))
    return x * s


class DropPath(nn.Module):
  """Stochastic depth (Huang et al. 2016): drop a residual branch per example.

  In training y = x · b / (1 - p), b ~ Bernoulli(1 - p) for each example (the
  'dropout' rng); so E[y] = x. In evaluation y = x.
  """
  rate: float = 0.0

  @nn.compact
  def __call__(self, x, train: bool = False):
    if not train or self.rate == 0.0:
      return x
    keep = 1.0 - self.rate
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    b = jax.random.bernoulli(self.make_rng('dropout'), keep, shape)
    return jnp.where(b, x / keep, jnp.zeros_like(x))


class ClassifierHead(nn.Module):
  """Feature maps -> logits z (float32).

  ``pool='avg'``: global average pooling (N, H, W, C) -> (N, C);
  ``pool='flatten'``: (N, H·W·C). Then each hidden Dense -> act -> dropout (as
  AlexNet's FC6, FC7), dropout on the pooled features if there is no hidden
  layer (GoogLeNet), and the output Dense(num_classes).
  """
  num_classes: int = 10
  hidden: tuple = ()
  act: Callable = nn.relu
  dropout_rate: float = 0.0
  pool: str = 'avg'                  # | 'flatten'
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    if self.pool == 'avg':
      x = jnp.mean(x, axis=(1, 2))
    else:
      x = x.reshape((x.shape[0], -1))
    drop = nn.Dropout(self.dropout_rate, deterministic=not train)
    for i, h in enumerate(self.hidden):
      x = drop(self.act(nn.Dense(h, dtype=self.dtype, name=f'fc{i + 1}')(x)))
    if not self.hidden:
      x = drop(x)
    x = nn.Dense(self.num_classes, dtype=self.dtype, name='logits')(x)
    return x.astype(jnp.float32)
