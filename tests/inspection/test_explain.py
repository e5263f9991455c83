"""The explainer: LeNet-5 by hand, conv output sizes, receptive fields, all models."""
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from mnist_jax import models
from mnist_jax.inspection import explain
from mnist_jax.models.cnn import CNN
from mnist_jax.models.lenet import LeNet5
from mnist_jax.nn import fast_layers

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _by_name(rows):
  return {r.name: r for r in rows}


def test_lenet5_by_hand():
  rows = _by_name(explain.explain(LeNet5()))
  c1, c3 = rows['C1'], rows['C3']
  assert c1.params == 5 * 5 * 1 * 6 + 6 == 156
  assert c1.macs == 28 * 28 * 25 * 6 == 117_600
  assert c3.params == 5 * 5 * 6 * 16 + 16 == 2_416
  assert c3.macs == 10 * 10 * 150 * 16 == 240_000
  assert c3.out_shape == ((14 - 5 + 0) // 1 + 1,) * 2 + (16,) == (10, 10, 16)
  # r: C1 5 (j=1) -> S2 5 + 1·1 = 6 (j=2) -> C3 6 + 4·2 = 14.
  assert c1.rf == (5, 5) and rows['pool_0'].rf == (6, 6) and c3.rf == (14, 14)
  assert c3.jump == (2, 2)
  assert rows['C5'].rf == explain.FULL
  assert sum(r.params for r in rows.values()) == 61_706
  assert sum(r.macs for r in rows.values()) == 117_600 + 240_000 + 400 * 120 + 120 * 84 + 840


def test_rows_match_the_models_real_shapes():
  model = LeNet5()
  x = jnp.zeros((2, 28, 28, 1))
  _, state = jax.eval_shape(lambda x: model.init_with_output(
      jax.random.key(0), x, capture_intermediates=True), x)
  real = {k: v['__call__'][0].shape[1:] for k, v in state['intermediates'].items()
          if k != '__call__'}
  rows = _by_name(explain.explain(model))
  for name, shape in real.items():
    if name in rows:
      assert rows[name].out_shape == shape, name
  assert {'C1', 'C3', 'C5', 'F6', 'output'} <= set(real) & set(rows)


@pytest.mark.parametrize('w,k,s,p', [(28, 3, 1, 1), (28, 5, 1, 0), (28, 3, 2, 1),
                                     (28, 7, 2, 3), (14, 5, 3, 2)])
def test_conv_output_size_formula(w, k, s, p):
  model = CNN(features=(4,), kernel_size=k, strides=s, padding=p, pool='none',
              batch_norm=False, dense=())
  row = explain.explain(model, (1, w, w, 1))[0]
  out = (w - k + 2 * p) // s + 1
  assert row.out_shape == (out, out, 4)
  assert row.params == k * k * 1 * 4 + 4
  assert row.macs == out * out * k * k * 1 * 4


class _LinearNet(nn.Module):
  """conv5 -> avg-pool 2 -> [conv3 stride 2 | conv1 stride 2] -> add -> conv1.
  Linear (no ReLU, no max-pool), so the gradient support of a centre unit is
  exactly its receptive field."""

  @nn.compact
  def __call__(self, x, train=False):
    y = nn.Conv(2, (5, 5), padding='SAME')(x)
    y = nn.avg_pool(y, (2, 2), strides=(2, 2))
    a = nn.Conv(2, (3, 3), strides=(2, 2), padding='SAME')(y)
    b = nn.Conv(2, (1, 1), strides=(2, 2))(y)   # the shorter path
    return nn.Conv(1, (1, 1), name='head')(a + b)


def _gradient_support(model, size=48):
  x = jnp.zeros((1, size, size, 1))
  variables = jax.jit(model.init)(jax.random.key(0), x)
  variables = jax.tree_util.tree_map(jnp.ones_like, variables)   # no cancellation
  out = model.apply(variables, x)
  ci, cj = out.shape[1] // 2, out.shape[2] // 2
  g = jax.grad(lambda x: model.apply(variables, x)[0, ci, cj].sum())(x)[0, :, :, 0]
  rows, cols = np.nonzero(np.asarray(g))
  return rows.max() - rows.min() + 1, cols.max() - cols.min() + 1


def test_receptive_field_matches_gradient_support_and_takes_max_over_paths():
  model = _LinearNet()
  rows = explain.explain(model, (1, 48, 48, 1))
  # Long path: 5 -> 5 + 1·1 = 6 (j 2) -> 6 + 2·2 = 10; the 1x1 path sees 6;
  # after the addition the head sees max(10, 6) = 10.
  assert [r.rf for r in rows if r.kind == 'Conv'] == [(5, 5), (10, 10), (6, 6), (10, 10)]
  assert _gradient_support(model) == (10, 10)


class _SliceNet(nn.Module):
  """Depthwise 3x3 as a sum of shifted slices, 2x2 pooling as reshape + sum,
  then a VALID conv 3x3: the layers written without conv/pool primitives."""

  @nn.compact
  def __call__(self, x, train=False):
    w = self.param('kernel', nn.initializers.ones, (3, 3, 1, 1))
    xp = jnp.pad(x, [(0, 0), (1, 1), (1, 1), (0, 0)])
    h = x.shape[1]
    y = sum(xp[:, i:i + h, j:j + h] * w[i, j, 0] for i in range(3) for j in range(3))
    n, hh, ww, c = y.shape
    y = y.reshape(n, hh // 2, 2, ww // 2, 2, c).sum(axis=(2, 4))
    return nn.Conv(1, (3, 3), padding='VALID')(y)


def test_receptive_field_of_slice_convs_and_reshape_pooling():
  model = _SliceNet()
  rows = explain.explain(model, (1, 48, 48, 1))
  # 3 -> pool 2: 3 + 1·1 = 4 (j 2) -> conv 3: 4 + 2·2 = 8.
  assert [(r.kind, r.rf) for r in rows] == [('_SliceNet', (3, 3)), ('avg_pool', (4, 4)),
                                            ('Conv', (8, 8))]
  assert rows[1].kernel == (2, 2) and rows[1].out_shape == (24, 24, 1)
  assert rows[1].in_shape == (48, 48, 1)
  assert _gradient_support(model) == (8, 8)


def test_format_table_has_totals():
  table = explain.format_table(explain.explain(LeNet5()))
  assert '| C3 | Conv | 10x10x16 | 5 | 1 | 2,416 | 240,000 | 14 | 2 |' in table
  assert '**61,706**' in table


@pytest.mark.parametrize('name', models.names())
def test_every_registered_model(name):
  model = models.get_class(name)()
  rows = explain.explain(model)
  x = jax.ShapeDtypeStruct((1, 28, 28, 1), jnp.float32)
  variables = jax.eval_shape(
      lambda x: model.init({'params': jax.random.key(0), 'dropout': jax.random.key(1)},
                           x, train=False), x)
  total = sum(int(np.prod(v.shape)) for v in jax.tree_util.tree_leaves(variables['params']))
  assert sum(r.params for r in rows) == total
  assert not any(r.name == '(other)' for r in rows)   # every parameter has its layer
  assert any(r.kind in ('Conv', 'Dense') for r in rows)
  # Every conv and pool sees a local window: the RF was traced through them.
  assert all(isinstance(r.rf, tuple) for r in rows if r.kernel is not None), name
  assert all(r.macs >= 0 for r in rows)


def test_cli_prints_the_table():
  """python -m mnist_jax.explain."""
  out = subprocess.run([sys.executable, '-m', 'mnist_jax.explain',
                        '--config=configs/lenet.py'], capture_output=True, text=True,
                       check=True, cwd=ROOT).stdout
  assert '| C1 | Conv | 28x28x6 | 5 | 1 | 156 | 117,600 | 5 | 1 |' in out
  assert '**61,706**' in out


class _Shared(nn.Module):
  """One Dense applied twice: its weights are counted once."""

  @nn.compact
  def __call__(self, x, train=False):
    dense = nn.Dense(784)
    x = x.reshape((x.shape[0], -1))
    return dense(dense(x))


def test_shared_layer_counted_once():
  rows = explain.explain(_Shared())
  assert [r.name for r in rows] == ['Dense_0', 'Dense_0']
  assert sum(r.params for r in rows) == 784 * 784 + 784
  assert sum(r.macs for r in rows) == 2 * 784 * 784


def _tabulated(model, **kwargs):
  """{path: {column: text}} of flax's own rendered ``nn.tabulate`` (first call of a path)."""
  key = jax.random.key(0)
  text = nn.tabulate(model, {'params': key, 'dropout': key}, console_kwargs=dict(
      width=1000, no_color=True, force_terminal=False), **kwargs)(
          jnp.zeros((1, 28, 28, 1)), train=False)
  lines = [l.strip() for l in text.splitlines() if l.strip()[:1] in ('┃', '│', '├', '└')]
  head = [c.strip() for c in lines[0].strip('┃').split('┃')]
  table, cells = {}, []
  for line in lines[1:]:
    if line[0] in '├└':   # a row ends: join each column's lines
      cols = [' '.join(filter(None, col)) for col in zip(*cells)]
      table.setdefault(cols[0], dict(zip(head, cols)))
      cells = []
    else:
      cells.append([c.strip() for c in line.strip('│').split('│')])
  return table


def _count(cell):   # 'bias: float32[6] kernel: float32[5,5,1,6] 156 (624 B)' -> 156
  found = re.search(r'([\d,]+) \([\d.]+ [KMG]?B\)$', cell)
  return int(found.group(1).replace(',', '')) if found else 0


@pytest.mark.parametrize('name,kwargs', [
    ('lenet5', {}),   # B0's first two stages: depthwise (a custom layer), SE, skips
    ('efficientnet', dict(stages=((1, 16, 1, 1, 3), (6, 24, 2, 2, 3)), head_features=64))])
def test_shapes_and_params_are_flax_tabulates(name, kwargs):
  """The library is the source of truth for shapes and parameters: every layer
  row shows what flax's nn.tabulate prints for that module (pooling is a
  function, no module: its rows are ours)."""
  model = models.get_class(name)(**kwargs)
  flax_rows = _tabulated(model)
  rows = [r for r in explain.explain(model) if not r.name.startswith('pool_')]
  for r in rows:
    cell = flax_rows[r.name]
    assert cell['inputs'] == 'float32[1,%s]' % ','.join(map(str, r.in_shape)), r.name
    assert cell['outputs'] == 'float32[1,%s]' % ','.join(map(str, r.out_shape)), r.name
    assert _count(cell['params']) == r.params, r.name
  owners = {path for path, cell in flax_rows.items() if _count(cell.get('params', ''))}
  assert owners == {r.name for r in rows if r.params}


def test_macs_are_the_layers_not_flax_flops():
  """Why MACs are not taken from the library: flax's compute_flops is XLA's cost
  of the code. C1 as nn.Conv and as PatchConv (the same layer, the same
  variables) costs different FLOPs, neither 2·MACs; its MACs are one number."""
  flops, macs, kinds = set(), set(), set()
  for conv in (nn.Conv, fast_layers.PatchConv):
    model = LeNet5(conv=conv)
    flops.add(int(_tabulated(model, compute_flops=True)['C1']['flops']))
    macs.add(_by_name(explain.explain(model))['C1'].macs)
    kinds.add(_by_name(explain.explain(model))['C1'].kind)
  assert macs == {28 * 28 * 25 * 6} and len(flops) == 2 and 2 * 117_600 not in flops
  assert kinds == {'Conv'}   # the drop-in replacement is reported as the layer it computes
