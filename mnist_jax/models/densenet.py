"""DenseNet (Huang, Liu, van der Maaten, Weinberger 2017, "Densely Connected
Convolutional Networks"), DenseNet-BC sized for 28x28 MNIST.

Innovation: dense connectivity; inside a dense block layer l sees the
concatenation of every earlier feature map,

  x_l = H_l([x_0, x_1, ..., x_{l-1}])

and adds only k new maps (the growth rate), so a block with C_0 input channels
and L layers outputs C_0 + L·k channels; features are reused, not re-learned.
H_l = BN-act-conv1x1(4k) -BN-act-conv3x3(k) (the "B" bottleneck). A transition
layer BN-act-conv1x1(floor(θ·C))-avgpool 2x2 compresses channels by θ ("C")
and halves W. DenseNet-121 = blocks (6, 12, 24, 16), k = 32, θ = 0.5.

For 28x28 the stem is one 3x3 conv with 2k maps and a 2x2 max-pool (the
ImageNet stem is 7x7 stride 2 + pool), so with block_sizes (3, 6, 12), k = 12
(DenseNet-121's first three blocks, halved):

  28x28x1 -stem-> 28x28x24 -pool-> 14x14x24 -block1-> 14x14x60 -trans-> 7x7x30
  -block2-> 7x7x102 -trans-> 3x3x51 -block3-> 3x3x195 -BN,act,GAP-> 195 -FC-> 10
"""
import jax.numpy as jnp
from flax import linen as nn

from mnist_jax.models import blocks


class DenseLayer(blocks.Layer):
  """H_l: [BN-act-conv1x1(bn_size·k)] -BN-act-conv3x3(k); returns concat[x, H_l(x)].

  Output channels C + k. Params (BC): 2C + 4k·C + 2·4k + 9·4k·k (bn_size = 4).
  """
  growth_rate: int
  bn_size: int = 4
  bottleneck: bool = True

  @nn.compact
  def __call__(self, x, train: bool = False):
    kw = dict(act=self.act, order='bn_act_conv', **self.conv_kw())
    y = x
    if self.bottleneck:
      y = blocks.ConvBNAct(self.bn_size * self.growth_rate, 1, name='conv1x1',
                           **kw)(y, train)
    y = blocks.ConvBNAct(self.growth_rate, 3, name='conv3x3', **kw)(y, train)
    return jnp.concatenate([x, y], axis=-1)


class Transition(blocks.Layer):
  """BN-act-conv1x1(floor(θ·C)) then 2x2 average pool, stride 2."""
  compression: float = 0.5

  @nn.compact
  def __call__(self, x, train: bool = False):
    out = int(self.compression * x.shape[-1])
    x = blocks.ConvBNAct(out, 1, act=self.act, order='bn_act_conv', name='conv1x1',
                         **self.conv_kw())(x, train)
    return nn.avg_pool(x, (2, 2), strides=(2, 2))


class DenseNet(blocks.ConvNet):
  """DenseNet-BC: stem, dense blocks joined by transitions, BN-act-GAP, FC."""
  block_sizes: tuple = (3, 6, 12)    # layers per dense block (121: 6, 12, 24, 16)
  growth_rate: int = 12              # k
  compression: float = 0.5           # θ (1.0 = no compression, plain DenseNet)
  bottleneck: bool = True            # the 1x1 bn_size·k bottleneck (DenseNet-B)
  bn_size: int = 4
  stem_features: int = 0             # 0: 2k

  @nn.compact
  def __call__(self, x, train: bool = False):
    kw = self.block_kw()
    act = kw['act']
    x = x.astype(self.dtype)
    stem = self.stem_features or 2 * self.growth_rate
    x = blocks.ConvBNAct(stem, 3, use_bn=False, name='stem', dtype=self.dtype,
                         conv=self.conv)(x)
    x = self.max_pool(x, (2, 2), strides=(2, 2))
    for i, n in enumerate(self.block_sizes):
      for j in range(n):
        x = DenseLayer(self.growth_rate, self.bn_size, self.bottleneck,
                       name=f'block{i + 1}_layer{j + 1}', **kw)(x, train)
      if i < len(self.block_sizes) - 1:
        x = Transition(self.compression, name=f'transition{i + 1}', **kw)(x, train)
    x = act(blocks.batch_norm(train, self.axis_name, self.dtype, 'final_bn')(x))
    return blocks.ClassifierHead(self.num_classes, (), act, self.dropout_rate,
                                 pool='avg', dtype=self.dtype, name='head')(x, train)
