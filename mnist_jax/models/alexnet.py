"""AlexNet (Krizhevsky, Sutskever, Hinton 2012, "ImageNet Classification with
Deep Convolutional Neural Networks"), scaled down for 28x28 MNIST.

Innovation: a deep CNN made trainable by ReLU (max(0, z), no saturation),
dropout in the big fully connected layers, overlapping max-pooling (3x3 window,
stride 2 < 3) and local response normalization (trained on GPUs).

Eight learned layers as in the paper, 5 conv + 3 FC; the paper's large first
kernel (11x11 stride 4 on 224x224) becomes 7x7 stride 1 on 28x28, so the maps
shrink like the paper's (55 -> 27 -> 13 -> 6) do. Overlapping pool: (W - 3)/2 + 1.

  28x28x1 -C1 7x7-> 28x28xF1 -LRN,pool-> 13x13xF1 -C2 5x5-> 13x13xF2 -LRN,pool->
  6x6xF2 -C3,C4,C5 3x3-> 6x6xF5 -pool-> 2x2xF5 -flatten-> 4·F5 -FC6-> H1 -FC7->
  H2 -FC8-> 10

Local response normalization across n neighbouring channels:
  b_i = a_i / (k + α Σ_{j=i-n/2}^{i+n/2} a_j²)^β,  k=2, n=5, α=1e-4, β=0.75.
Dropout p = 0.5 after FC6 and FC7 (the paper's "first two fully-connected").
"""
from typing import Any, Callable

import jax.numpy as jnp
from flax import linen as nn

from mnist_jax.models import blocks
from mnist_jax.nn import activations

ModuleDef = Any

PAPER_FEATURES = (96, 256, 384, 384, 256)   # conv widths for 224x224 ImageNet
PAPER_DENSE = (4096, 4096)


def local_response_norm(a, n: int = 5, k: float = 2.0, alpha: float = 1e-4,
                        beta: float = 0.75):
  """b_i = a_i / (k + α Σ_{|j-i| <= n/2} a_j²)^β over the channel axis (last)."""
  c = a.shape[-1]
  i = jnp.arange(c)
  band = (jnp.abs(i[:, None] - i[None, :]) <= n // 2).astype(a.dtype)  # B_ij
  s = jnp.square(a) @ band                  # s_i = Σ_j a_j² B_ji, a banded sum
  return a * jnp.exp(-beta * jnp.log(k + alpha * s))   # a / (k + α s)^β


class AlexNet(nn.Module):
  """AlexNet, 5 conv + 3 FC; see the module docstring for shapes and formulas."""
  num_classes: int = 10
  features: tuple = (16, 48, 64, 64, 48)   # paper (96, 256, 384, 384, 256) / ~6
  dense_features: tuple = (256, 256)       # FC6, FC7 (paper 4096, 4096)
  stem_kernel: int = 7                     # C1's "large first kernel"
  lrn: bool = True                         # local response norm after C1, C2
  activation: str = 'relu'
  leaky_alpha: float = 0.01
  dropout_rate: float = 0.5
  dtype: Any = jnp.float32
  conv: ModuleDef = nn.Conv
  max_pool: Callable = nn.max_pool

  @nn.compact
  def __call__(self, x, train: bool = False):
    if len(self.features) != 5:
      raise ValueError(f'AlexNet.features needs 5 conv widths, got {self.features}')
    act = activations.get(self.activation, leaky_alpha=self.leaky_alpha)
    x = x.astype(self.dtype)
    kernels = (self.stem_kernel, 5, 3, 3, 3)
    for i, (f, k) in enumerate(zip(self.features, kernels)):
      x = blocks.ConvBNAct(f, k, use_bn=False, act=act, dtype=self.dtype,
                           conv=self.conv,
                           name=f'conv{i + 1}')(x)
      if i < 2 and self.lrn:
        x = local_response_norm(x)
      if i in (0, 1, 4):                     # overlapping max-pool 3x3, stride 2
        x = self.max_pool(x, (3, 3), strides=(2, 2))
    return blocks.ClassifierHead(
        self.num_classes, tuple(self.dense_features), act, self.dropout_rate,
        pool='flatten', dtype=self.dtype, name='head')(x, train)
