"""The model explainer: per layer the output shape, parameters, MACs and receptive field.

  python -m mnist_jax.explain --config=configs/lenet.py

Formulas (per image; K kernel, S stride, P padding, C input channels, F filters):
  conv output size    W_out = (W − K + 2P)/S + 1
  conv parameters     K·K·C·F + F   (no +F when the conv has no bias, e.g. before BN)
  conv MACs           H_out·W_out·K·K·C·F   (multiply-accumulates)
  dense               in·out + out parameters, in·out MACs
  receptive field     r_out = r_in + (K − 1)·j_in,  j_out = j_in·S   (r = j = 1 at the input)
for conv and pooling layers; j is the 'jump', the input-pixel distance between
neighbouring units. Batch norm, activations and pooling have no MACs counted.

Where each number comes from (exact, for every registered model): shapes and
parameters of the layers (Conv / Dense / norm calls, custom layers owning
parameters, e.g. a depthwise conv written as shifted slices) from flax's own
table (``nn.tabulate``'s rows: each module call's inputs, outputs and own
variables; a repeated call of shared weights owns none). MACs = output positions
× kernel size, not flax's FLOPs (XLA's cost of the code; ``_layers`` says why).
What flax cannot give, from one more trace (no compute), each module call under
a named scope of ours: pooling rows (pooling is a function in flax, no module)
and the RF recurrence over the jaxpr, per axis (r, j, a), a = the input
coordinate where unit 0's field starts: convs and pools (reduce_window, or
reshape to (N, H/k, k, W/k, k, C) + max/sum) apply it and shift a by their
padding; pad/slice shift a (a strided slice multiplies j); element-wise ops,
concatenations and skip additions take the union of their inputs' fields
(Inception branches, residual paths: the max over paths); flatten, dense and
global pooling see the whole input ('all'); a global gate (squeeze-excitation)
scales channels and leaves the window alone. This is the theoretical RF (it may
exceed 28). The gradient support of a centre unit would undercount it: max-pool
passes gradient to one element per window, a ReLU at z < 0 to none.
"""
import dataclasses
import math
from typing import Any, Optional

import jax
import jax.numpy as jnp
from flax import linen as nn
from flax.linen import summary as fsummary
from jax.extend import core as jcore

LAYER_TYPES = (nn.Conv, nn.ConvTranspose, nn.Dense, nn.DenseGeneral, nn.BatchNorm,
               nn.LayerNorm, nn.GroupNorm, nn.Embed)
POOL_PRIMITIVES = {'reduce_window_max': 'max_pool', 'reduce_window_sum': 'avg_pool',
                   'reduce_window_min': 'min_pool', 'reduce_window': 'pool'}
REDUCE_POOLS = {'reduce_max': 'max_pool', 'reduce_sum': 'avg_pool', 'reduce_min': 'min_pool'}
FULL = 'all'   # RF marker: the unit sees the whole input
_MARK = '__layer{}__'


@dataclasses.dataclass
class Row:
  name: str            # module path, or 'pool_<n>' for a pooling op
  kind: str            # Conv, Dense, BatchNorm, max_pool, avg_pool, ...
  in_shape: tuple      # per image (batch dim dropped)
  out_shape: tuple
  params: int = 0      # trainable parameters of this layer
  macs: int = 0        # multiply-accumulates per image
  kernel: Optional[tuple] = None  # K (spatial window) of a conv or pool
  stride: Optional[tuple] = None  # S
  rf: Any = None       # (r_h, r_w), FULL, or None (does not depend on the input)
  jump: Optional[tuple] = None
  start: Optional[tuple] = None   # (a_h, a_w): input coordinate where unit 0's field starts


def _size(tree):
  return sum(int(math.prod(x.shape)) for x in jax.tree_util.tree_leaves(tree))


def _shape(tree):
  leaves = [x for x in jax.tree_util.tree_leaves(tree) if hasattr(x, 'shape')]
  return tuple(leaves[0].shape[1:]) if leaves else ()


def _flax_table(model, input_shape):
  """flax's own per-call rows (what ``nn.tabulate`` renders; the public API only
  returns the rendered string): path, module, inputs, outputs and the module's
  own variables (submodules' excluded; empty on a repeated call of shared weights)."""
  rng = jax.random.key(0)
  table = fsummary._get_module_table(model, depth=None, show_repeated=True,
                                     compute_flops=False, compute_vjp_flops=False)
  table = table({'params': rng, 'dropout': rng}, jnp.zeros(input_shape), train=False)
  return [t for t in table if t.method == '__call__']


def _layers(table):
  """{(path, n-th call): Row} for every layer call (LAYER_TYPES or owning
  parameters); shapes and parameters as flax's table reports them."""
  rows, owned, calls = {}, {}, {}
  for t in table:
    path = '/'.join(t.path)
    own = owned.setdefault(path, t.module_variables.get('params', {}))  # 1st call's
    key = (path, calls.setdefault(path, 0))
    calls[path] += 1
    if not (isinstance(t.module_copy, LAYER_TYPES) or own):
      continue
    # A drop-in replacement subclasses the flax layer it computes (nn/fast_layers.py's
    # PatchConv is an nn.Conv): the row names the flax layer.
    kind = next((c.__name__ for c in LAYER_TYPES if isinstance(t.module_copy, c)),
                type(t.module_copy).__name__)
    params, _ = t.size_and_bytes(['params'])['params']   # flax's params column
    row = rows[key] = Row(path, kind, _shape(t.inputs), _shape(t.outputs), params=params)
    # MACs by the formula, not flax's compute_flops: that is XLA's cost analysis of
    # the code, not of the layer. LeNet-5's C1 (117,600 MACs) is 220,176 FLOPs as
    # nn.Conv (taps on the zero padding not counted, bias adds counted) and 239,905
    # as PatchConv; a masked kernel adds K·K·C·F multiplies; a slice-written conv
    # adds K²−1 times per output, not K²; batch norm and activations count too.
    kernel = own.get('kernel')
    if kernel is not None and kernel.ndim >= 2:
      # Conv: positions · K·K·(C/groups)·F; Dense: positions · in·out.
      row.macs = int(math.prod(row.out_shape[:-1])) * int(math.prod(kernel.shape))
      if kernel.ndim == 4:
        row.kernel = tuple(kernel.shape[:2])
        strides = getattr(t.module_copy, 'strides', None) or 1
        row.stride = tuple(strides) if isinstance(strides, (tuple, list)) else (strides,) * 2
  return rows


def _trace(model, variables, x, calls):
  """The jaxpr of ``model.apply``; the n-th module call runs under the named scope
  _MARK.format(n), and calls[n] = (path, how many calls of path came before)."""
  def interceptor(next_fun, args, kwargs, context):
    if context.method_name != '__call__':
      return next_fun(*args, **kwargs)
    path = '/'.join(context.module.path)
    calls.append((path, sum(p == path for p, _ in calls)))
    with jax.named_scope(_MARK.format(len(calls) - 1)):
      return next_fun(*args, **kwargs)

  with nn.intercept_methods(interceptor):
    return jax.make_jaxpr(lambda v, x: model.apply(v, x, train=False))(variables, x)


def _marker(eqn, inherited, marks):
  """The innermost layer whose scope the equation runs in (``marks``: our scope
  names -> layer index, matched against the name stack's entries whole)."""
  found = [marks[s.name] for s in eqn.source_info.name_stack.stack
           if getattr(s, 'name', None) in marks]
  return found[-1] if found else inherited


def _window(info, k, s, pad_lo, dil=(1, 1)):
  """(r, j, a) per axis through a window K, stride S, low padding P (dilation l)."""
  return tuple((r + (ki - 1) * j / li, j * si / li, a - pi * j / li)
               for (r, j, a), ki, si, pi, li in zip(info, k, s, pad_lo, dil))


def _walk(jaxpr, infos, events, marks, inherited=None):
  """Propagates RF info through ``jaxpr``; ``infos`` maps vars to it."""
  def get(v):
    return None if isinstance(v, jcore.Literal) else infos.get(v)

  for eqn in jaxpr.eqns:
    mark = _marker(eqn, inherited, marks)
    ins = [get(v) for v in eqn.invars]
    sub = next((p for p in eqn.params.values()
                if isinstance(p, (jcore.Jaxpr, jcore.ClosedJaxpr))), None)
    sub = sub.jaxpr if isinstance(sub, jcore.ClosedJaxpr) else sub
    if sub is not None and len(sub.invars) == len(eqn.invars):
      inner = dict(zip(sub.invars, ins))
      _walk(sub, inner, events, marks, mark)
      outs = [None if isinstance(v, jcore.Literal) else inner.get(v)
              for v in sub.outvars]
    else:
      outs = [_rule(eqn, ins)] * len(eqn.outvars)
    for v, info in zip(eqn.outvars, outs):
      if info is not None:
        infos[v] = info
    events.append((mark, eqn, outs[0] if outs else None))


def _local(info):
  """True for a per-axis ((r, j, a), (r, j, a)) field (not FULL, None or split)."""
  return isinstance(info, tuple) and not isinstance(info[0], str)


def _split_window(eqn):
  """(k_h, k_w) if ``eqn`` reduces the window axes of (N, H/k, k, W/k, k, C)."""
  if eqn.primitive.name not in REDUCE_POOLS or len(eqn.invars[0].aval.shape) != 6:
    return None
  shape = eqn.invars[0].aval.shape
  return (shape[2], shape[4]) if tuple(eqn.params['axes']) == (2, 4) else None


def _spatial(var):
  shape = var.aval.shape
  return tuple(shape[1:3]) if len(shape) == 4 else None


def _rule(eqn, ins):
  """RF info of an equation's output from its inputs' infos."""
  if all(i is None for i in ins):
    return None
  name, p, first = eqn.primitive.name, eqn.params, ins[0]
  if isinstance(first, tuple) and first[0] == 'split':   # pooling as reshape + reduce
    k = _split_window(eqn)
    return _window(first[1], k, k, (0, 0)) if k else FULL
  if name == 'reshape' and _local(first):
    n, h, w, c = eqn.invars[0].aval.shape
    out = eqn.outvars[0].aval.shape
    if len(out) == 6 and out[0] == n and out[5] == c and out[1] * out[2] == h \
        and out[3] * out[4] == w:
      return ('split', first)
  if name == 'conv_general_dilated':
    if not _local(first) or ins[1] is not None:
      return FULL
    rhs = eqn.invars[1].aval.shape
    k = [rhs[a] for a in p['dimension_numbers'].rhs_spec[2:]]
    k = [d * (ki - 1) + 1 for ki, d in zip(k, p['rhs_dilation'])]
    return _window(first, k, p['window_strides'], [lo for lo, _ in p['padding']],
                   p['lhs_dilation'])
  if name in POOL_PRIMITIVES and _spatial(eqn.outvars[0]) and _local(first):
    w, d = p['window_dimensions'][1:3], p['window_dilation'][1:3]
    k = [di * (wi - 1) + 1 for wi, di in zip(w, d)]
    return _window(first, k, p['window_strides'][1:3],
                   [lo for lo, _ in p['padding'][1:3]], p['base_dilation'][1:3])
  if name == 'pad' and _local(first):
    return tuple((r, j, a - lo * j) for (r, j, a), (lo, _, _)
                 in zip(first, p['padding_config'][1:3]))
  if name == 'slice' and _local(first):
    strides = p['strides'] or (1,) * 4
    return tuple((r, j * st, a + s0 * j) for (r, j, a), s0, st
                 in zip(first, p['start_indices'][1:3], strides[1:3]))
  out = _spatial(eqn.outvars[0])
  same = [i for v, i in zip(eqn.invars, ins) if _local(i)
          and out is not None and _spatial(v) == out]
  if not same:
    return FULL   # spatial positions mixed: flatten, dense, global pooling
  # Union of the fields of unit 0 (a global gate, FULL, does not move them).
  starts = [min(i[ax][2] for i in same) for ax in range(2)]
  ends = [max(i[ax][2] + i[ax][0] for i in same) for ax in range(2)]
  return tuple((ends[ax] - starts[ax], max(i[ax][1] for i in same), starts[ax])
               for ax in range(2))


def _pool_row(eqn, info, n):
  """A Row for a pooling equation (reduce_window or reshape + reduce), else None."""
  name, p = eqn.primitive.name, eqn.params
  if not _local(info) or not eqn.invars:
    return None
  if name in POOL_PRIMITIVES:
    k, s, kind = p['window_dimensions'][1:3], p['window_strides'][1:3], POOL_PRIMITIVES[name]
  elif _split_window(eqn):
    k = s = _split_window(eqn)
    kind = REDUCE_POOLS[name]
  else:
    return None
  out = tuple(eqn.outvars[0].aval.shape[1:])
  in_shape = (out[0] * k[0], out[1] * k[1], out[2]) if not name.startswith(
      'reduce_window') else tuple(eqn.invars[0].aval.shape[1:])
  return Row(f'pool_{n}', kind, in_shape, out, kernel=tuple(k), stride=tuple(s), rf=info)


def explain(model: nn.Module, input_shape=(1, 28, 28, 1), variables=None) -> list:
  """Rows (``Row``) for every layer of ``model`` on an input of ``input_shape``."""
  x = jax.ShapeDtypeStruct(tuple(input_shape), jnp.float32)
  if variables is None:
    rng = jax.random.key(0)
    variables = jax.eval_shape(
        lambda x: model.init({'params': rng, 'dropout': rng}, x, train=False), x)
  layers = _layers(_flax_table(model, input_shape))
  calls = []
  jaxpr = _trace(model, variables, x, calls).jaxpr
  captured = [layers.get(call) for call in calls]   # None: not a layer
  marks = {_MARK.format(i): i for i, r in enumerate(captured) if r is not None}
  infos = {jaxpr.invars[-1]: ((1.0, 1.0, 0.0), (1.0, 1.0, 0.0))}   # the image x
  events = []
  _walk(jaxpr, infos, events, marks)
  rows, seen = [], set()
  for mark, eqn, info in events:
    pool = _pool_row(eqn, info, sum(r.name.startswith('pool_') for r in rows))
    if pool is not None:
      rows.append(pool)
    elif mark is not None:
      if mark not in seen:
        seen.add(mark)
        rows.append(captured[mark])
      if _local(info) or info == FULL:
        captured[mark].rf = info
  rows += [r for i, r in enumerate(captured) if r is not None and i not in seen]
  rows += [r for call, r in layers.items() if call not in calls]   # init-only calls
  for row in rows:
    if isinstance(row.rf, tuple):
      row.jump = tuple(j for _, j, _ in row.rf)
      row.start = tuple(a for _, _, a in row.rf)
      row.rf = tuple(int(round(r)) for r, _, _ in row.rf)
  total = _size(variables.get('params', {}))
  counted = sum(r.params for r in rows)
  if total != counted:  # parameters declared outside the captured layer types
    rows.append(Row('(other)', 'params', (), (), params=total - counted))
  return rows


def _fmt_shape(shape):
  return 'x'.join(str(d) for d in shape)


def _fmt_pair(pair):
  if pair is None:
    return ''
  if pair == FULL:
    return FULL
  vals = [f'{v:g}' for v in pair]
  return vals[0] if len(set(vals)) == 1 else 'x'.join(vals)


def format_table(rows, non_trainable: int = 0) -> str:
  """A markdown table of ``rows`` with a totals line."""
  head = ('| layer | type | output | K | S | params | MACs | RF | j |\n'
          '|---|---|---|---|---|---:|---:|---:|---:|')
  lines = [head]
  for r in rows:
    lines.append(f'| {r.name} | {r.kind} | {_fmt_shape(r.out_shape)} | '
                 f'{_fmt_pair(r.kernel)} | {_fmt_pair(r.stride)} | {r.params:,} | '
                 f'{r.macs:,} | {_fmt_pair(r.rf)} | {_fmt_pair(r.jump)} |')
  total_p, total_m = sum(r.params for r in rows), sum(r.macs for r in rows)
  lines.append(f'| **total** | | | | | **{total_p:,}** | **{total_m:,}** | | |')
  if non_trainable:
    lines.append(f'\n{non_trainable:,} non-trainable values (batch-norm running averages).')
  return '\n'.join(lines)


def describe(model_config) -> str:
  """The explainer's table for ``config.model`` (shapes only: nothing is computed)."""
  from mnist_jax import models  # pylint: disable=g-import-not-at-top
  model = models.build(model_config)
  rng = jax.random.key(0)
  x = jax.ShapeDtypeStruct((1, 28, 28, 1), jnp.float32)
  variables = jax.eval_shape(
      lambda x: model.init({'params': rng, 'dropout': rng}, x, train=False), x)
  return (f'{model_config.name}: input 28x28x1, per-image MACs\n\n'
          + format_table(explain(model, variables=variables),
                         _size(variables.get('batch_stats', {}))))
