"""ResNet (He, Zhang, Ren, Sun 2015, "Deep Residual Learning for Image
Recognition"), sized for 28x28 MNIST.

Innovation: skip connections; each block learns a residual F(x) and outputs

  y = act(F(x) + x)             identity skip (same shape)
  y = act(F(x) + W_s x)         projection skip, W_s a 1x1 conv (stride 2) + BN,
                                when the block changes the width or the size

so gradients flow through the identity path and very deep stacks still train.
Basic block: F = BN(conv3x3(act(BN(conv3x3(x))))), params 18C² + 4C for C -> C.
Bottleneck block: 1x1 (reduce to F) -> 3x3 (F) -> 1x1 (expand to 4F).

ResNet-18 = stage_sizes (2, 2, 2, 2) of basic blocks; ResNet-50 = (3, 4, 6, 3) of
bottleneck blocks. The ImageNet stem (7x7 conv stride 2 + 3x3/2 max-pool,
224 -> 56) becomes a 3x3 conv + 3x3/2 max-pool (28 -> 14; ``stem_pool=False``
keeps 28 like the paper's CIFAR nets); each later stage halves W:

  28x28x1 -stem 3x3-> 28x28xS -pool-> 14x14xS -stage1-> 14x14xF1 -stage2->
  7x7xF2 -stage3-> 4x4xF3 -stage4-> 2x2xF4 -GAP-> F4 (x4 bottleneck) -FC-> 10
"""
from flax import linen as nn

from mnist_jax.errors import UserError
from mnist_jax.models import blocks


class BasicBlock(blocks.Layer):
  """Two 3x3 convs + skip: y = act(F(x) + skip(x)); output width F."""
  features: int
  strides: int = 1
  zero_init_residual: bool = True
  expansion = 1

  @nn.compact
  def __call__(self, x, train: bool = False):
    kw = self.conv_kw()
    y = blocks.ConvBNAct(self.features, 3, self.strides, act=self.act,
                         name='conv1', **kw)(x, train)
    y = blocks.ConvBNAct(self.features, 3, bn_scale_init=_last_gamma(self),
                         name='conv2', **kw)(y, train)
    return self.act(y + _skip(x, self.features, self.strides, kw, train))


class BottleneckBlock(blocks.Layer):
  """1x1 reduce -> 3x3 -> 1x1 expand (x4) + skip; output width 4F."""
  features: int
  strides: int = 1
  zero_init_residual: bool = True
  expansion = 4

  @nn.compact
  def __call__(self, x, train: bool = False):
    kw = self.conv_kw()
    out = self.features * self.expansion
    y = blocks.ConvBNAct(self.features, 1, act=self.act, name='conv1', **kw)(x, train)
    y = blocks.ConvBNAct(self.features, 3, self.strides, act=self.act,
                         name='conv2', **kw)(y, train)
    y = blocks.ConvBNAct(out, 1, bn_scale_init=_last_gamma(self),
                         name='conv3', **kw)(y, train)
    return self.act(y + _skip(x, out, self.strides, kw, train))


def _last_gamma(block):
  """γ = 0 in a block's last BN: F(x) = 0 at init, each block starts as the
  identity (Goyal et al. 2017), which speeds up early training."""
  return nn.initializers.zeros if block.zero_init_residual else nn.initializers.ones


def _skip(x, features, strides, kw, train):
  """Identity if the shape is kept, else the projection W_s x (1x1 conv + BN)."""
  if x.shape[-1] == features and strides == 1:
    return x
  return blocks.ConvBNAct(features, 1, strides, padding=0, name='projection',
                          **kw)(x, train)


BLOCKS = {'basic': BasicBlock, 'bottleneck': BottleneckBlock}


class ResNet(blocks.ConvNet):
  """ResNet: stem, stages of residual blocks (stride 2 from stage 2), GAP, FC."""
  stage_sizes: tuple = (2, 2, 2, 2)   # blocks per stage: ResNet-18 style
  block: str = 'basic'                # 'basic' | 'bottleneck'
  widths: tuple = (16, 32, 64, 128)   # F per stage (paper 64, 128, 256, 512)
  stem_features: int = 16
  stem_pool: bool = True              # 3x3/2 max-pool after the stem (28 -> 14)
  zero_init_residual: bool = True     # γ = 0 in each block's last BN
  # dropout_rate: before the FC (the paper uses none)

  @nn.compact
  def __call__(self, x, train: bool = False):
    if self.block not in BLOCKS:
      raise UserError(f"unknown ResNet block '{self.block}'; set "
                      "config.model.block to 'basic' or 'bottleneck'")
    if len(self.stage_sizes) != len(self.widths):
      raise UserError(f'ResNet has {len(self.stage_sizes)} stage_sizes but '
                      f'{len(self.widths)} widths; give one width per stage')
    kw = self.block_kw()
    x = x.astype(self.dtype)
    x = blocks.ConvBNAct(self.stem_features, 3, name='stem', **kw)(x, train)
    if self.stem_pool:
      x = self.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    for i, (n, f) in enumerate(zip(self.stage_sizes, self.widths)):
      for j in range(n):
        strides = 2 if i > 0 and j == 0 else 1
        x = BLOCKS[self.block](f, strides, self.zero_init_residual,
                               name=f'stage{i + 1}_block{j + 1}', **kw)(x, train)
    return blocks.ClassifierHead(self.num_classes, (), kw['act'], self.dropout_rate,
                                 pool='avg', dtype=self.dtype, name='head')(x, train)
