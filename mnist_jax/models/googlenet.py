"""GoogLeNet (Szegedy et al. 2014, "Going Deeper with Convolutions"),
scaled for 28x28 MNIST.

Innovation: the Inception module, four parallel branches concatenated along
channels, with cheap 1x1 convolutions reducing the channels before the
expensive 3x3 and 5x5 convs:

  y = concat_C[ 1x1(x),  3x3(1x1(x)),  5x5(1x1(x)),  1x1(maxpool3x3(x)) ]
  C_out = c1 + c3 + c5 + pool_proj

A 1x1 conv C -> r before a 5x5 conv r -> F costs C·r + 25·r·F weights instead
of 25·C·F. ``branch5='double3x3'`` replaces the 5x5 by two 3x3 convs (same
5x5 receptive field, Inception-v2). The paper's nine modules (3a, 3b, 4a-4e, 5a,
5b; table below) keep their relative widths, scaled by ``width``:

  28x28x1 -stem 3x3-> 28x28xS -maxpool 3x3/2-> 14x14 -3a,3b-> 14x14x(480w)
  -maxpool-> 7x7 -4a..4e-> 7x7x(832w) -maxpool-> 4x4 -5a,5b-> 4x4x(1024w)
  -GAP-> 1024w -dropout 0.4-> 10

Pools are 3x3, stride 2, P = 1: W_out = floor((W - 3 + 2)/2) + 1. The auxiliary
classifiers (a training aid in the paper) are left out.
"""
from typing import Any, Callable

import jax.numpy as jnp
from flax import linen as nn

from mnist_jax.errors import UserError
from mnist_jax.models import blocks

# Szegedy et al. 2014, Table 1: (#1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj)
PAPER_MODULES = {
    '3a': (64, 96, 128, 16, 32, 32), '3b': (128, 128, 192, 32, 96, 64),
    '4a': (192, 96, 208, 16, 48, 64), '4b': (160, 112, 224, 24, 64, 64),
    '4c': (128, 128, 256, 24, 64, 64), '4d': (112, 144, 288, 32, 64, 64),
    '4e': (256, 160, 320, 32, 128, 128), '5a': (256, 160, 320, 32, 128, 128),
    '5b': (384, 192, 384, 48, 128, 128),
}
PLANS = {
    'googlenet': ('3a', '3b', 'M', '4a', '4b', '4c', '4d', '4e', 'M', '5a', '5b'),
    'small': ('3a', '3b', 'M', '4a', '4b'),
}


def resolve_plan(plan, width: float = 1.0) -> tuple:
  """Plan name or tuple of module names / 6-tuples / 'M' -> scaled 6-tuples and 'M'."""
  if isinstance(plan, str):
    if plan not in PLANS:
      raise UserError(f"unknown GoogLeNet plan '{plan}'; set config.model.plan "
                      f"to one of {', '.join(PLANS)}")
    plan = PLANS[plan]
  out = []
  for m in plan:
    if m == 'M':
      out.append(m)
      continue
    widths = PAPER_MODULES[m] if isinstance(m, str) else m
    out.append(tuple(max(1, int(round(c * width))) for c in widths))
  return tuple(out)


class Inception(blocks.Layer):
  """Four branches (1x1; 1x1->3x3; 1x1->5x5; pool->1x1), concatenated on C."""
  c1: int
  c3_reduce: int
  c3: int
  c5_reduce: int
  c5: int
  pool_proj: int
  branch5: str = '5x5'               # | 'double3x3'
  batch_norm: bool = False
  max_pool: Callable = nn.max_pool

  @nn.compact
  def __call__(self, x, train: bool = False):
    def conv(f, k, name):
      return blocks.ConvBNAct(f, k, use_bn=self.batch_norm, act=self.act,
                              name=name, **self.conv_kw())
    b1 = conv(self.c1, 1, 'b1_1x1')(x, train)
    b2 = conv(self.c3_reduce, 1, 'b2_reduce')(x, train)
    b2 = conv(self.c3, 3, 'b2_3x3')(b2, train)
    b3 = conv(self.c5_reduce, 1, 'b3_reduce')(x, train)
    if self.branch5 == '5x5':
      b3 = conv(self.c5, 5, 'b3_5x5')(b3, train)
    elif self.branch5 == 'double3x3':
      b3 = conv(self.c5, 3, 'b3_3x3a')(b3, train)
      b3 = conv(self.c5, 3, 'b3_3x3b')(b3, train)
    else:
      raise UserError(f"unknown branch5 '{self.branch5}'; set "
                      "config.model.branch5 to '5x5' or 'double3x3'")
    b4 = self.max_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)))
    b4 = conv(self.pool_proj, 1, 'b4_pool_proj')(b4, train)
    return jnp.concatenate([b1, b2, b3, b4], axis=-1)


class GoogLeNet(blocks.ConvNet):
  """GoogLeNet: stem conv, Inception modules and max-pools, GAP, dropout, FC."""
  plan: Any = 'googlenet'            # 'googlenet' | 'small' | tuple
  width: float = 0.125               # multiplier on the paper's widths
  stem_features: int = 24            # paper: 192 channels before 3a
  branch5: str = '5x5'
  batch_norm: bool = True            # not in the paper (added by Inception-v2)
  dropout_rate: float = 0.4          # paper: 40 % before the classifier

  @nn.compact
  def __call__(self, x, train: bool = False):
    kw = self.block_kw()
    act = kw['act']
    x = x.astype(self.dtype)
    x = blocks.ConvBNAct(self.stem_features, 3, use_bn=self.batch_norm, name='stem',
                         **kw)(x, train)
    x = self.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    n = 0
    for m in resolve_plan(self.plan, self.width):
      if m == 'M':
        x = self.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        continue
      n += 1
      x = Inception(*m, branch5=self.branch5, batch_norm=self.batch_norm,
                    max_pool=self.max_pool, name=f'inception{n}', **kw)(x, train)
    return blocks.ClassifierHead(self.num_classes, (), act, self.dropout_rate,
                                 pool='avg', dtype=self.dtype, name='head')(x, train)
