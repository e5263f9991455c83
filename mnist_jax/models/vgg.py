"""VGG (Simonyan, Zisserman 2014, "Very Deep Convolutional Networks for
Large-Scale Image Recognition"), widths scaled for 28x28 MNIST.

Innovation: depth from stacks of small 3x3 convolutions only (stride 1, P = 1,
so W is kept), with 2x2 max-pools between stacks. Two stacked 3x3 convs see a
5x5 receptive field, three see 7x7, with fewer weights (3·9C² < 49C²) and more
non-linearities.

A plan lists conv widths and 'M' (max-pool); VGG-11 = 8 convs + 3 FC,
VGG-16 = 13 convs + 3 FC, exactly the paper's configurations A and D. Pools use
'SAME' padding, W_out = ceil(W / 2), so the five pools fit 28x28:

  28x28x1 -> stack1 -> 14x14 -> stack2 -> 7x7 -> stack3 -> 4x4 -> stack4 -> 2x2
  -> stack5 -> 1x1xC5 -flatten-> FC -> FC -> 10

Widths are the paper's times ``width`` (e.g. 1/8: 64 -> 8, ..., 512 -> 64).
``batch_norm=True`` adds BN after every conv (the later VGG-BN variant; the
paper had none).
"""
from typing import Any

from flax import linen as nn

from mnist_jax.errors import UserError
from mnist_jax.models import blocks

PLANS = {
    'vgg11': (64, 'M', 128, 'M', 256, 256, 'M', 512, 512, 'M', 512, 512, 'M'),
    'vgg13': (64, 64, 'M', 128, 128, 'M', 256, 256, 'M', 512, 512, 'M',
              512, 512, 'M'),
    'vgg16': (64, 64, 'M', 128, 128, 'M', 256, 256, 256, 'M', 512, 512, 512,
              'M', 512, 512, 512, 'M'),
    'vgg19': (64, 64, 'M', 128, 128, 'M', 256, 256, 256, 256, 'M',
              512, 512, 512, 512, 'M', 512, 512, 512, 512, 'M'),
}


def resolve_plan(plan, width: float = 1.0) -> tuple:
  """A plan name or tuple -> the tuple of scaled conv widths and 'M'."""
  if isinstance(plan, str):
    if plan not in PLANS:
      raise UserError(f"unknown VGG plan '{plan}'; set config.model.plan to one "
                      f"of {', '.join(PLANS)} or a tuple of widths and 'M'")
    plan = PLANS[plan]
  return tuple(v if v == 'M' else max(1, int(round(v * width))) for v in plan)


class VGG(blocks.ConvNet):
  """VGG with a configurable plan; see the module docstring."""
  plan: Any = 'vgg11'                 # 'vgg11'|'vgg13'|'vgg16'|'vgg19'|tuple
  width: float = 0.125                # multiplier on the paper's conv widths
  dense_features: tuple = (256, 256)  # FC6, FC7 (paper 4096)
  batch_norm: bool = False
  dropout_rate: float = 0.5           # after FC6 and FC7, as in the paper

  @nn.compact
  def __call__(self, x, train: bool = False):
    kw = self.block_kw()
    x = x.astype(self.dtype)
    n = 0
    for v in resolve_plan(self.plan, self.width):
      if v == 'M':
        x = self.max_pool(x, (2, 2), strides=(2, 2), padding='SAME')
      else:
        n += 1
        x = blocks.ConvBNAct(v, 3, use_bn=self.batch_norm, name=f'conv{n}',
                             **kw)(x, train)
    return blocks.ClassifierHead(
        self.num_classes, tuple(self.dense_features), kw['act'], self.dropout_rate,
        pool='flatten', dtype=self.dtype, name='head')(x, train)
