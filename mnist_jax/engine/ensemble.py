"""Deep ensembles (Lakshminarayanan et al. 2017) trained as one vmapped program.

``config.ensemble.size = K`` makes K members: member k is the config with seed
s_k = config.seed + k (member 0 is the single run of the config), with its own
initial weights, data order, augmentation and dropout draws. They train as one
group of engine/stacked.py (``jax.vmap(train_step)`` over stacked weights), so
member k follows the run of its single config up to float rounding. The run
keeps one workdir and one checkpoint holding the stacked members.

The ensemble predicts the mean of its members' probabilities (not logits),

  p(y | x) = (1/K) Σ_k softmax(f(x; w_k)),      ŷ = argmax_y p(y | x),

and its members' disagreement on an image is reported two ways:
  spread     std_k of p_k(ŷ | x), the members' probabilities of the ensemble's class
  dissent    the fraction of members whose own argmax differs from ŷ.

Per epoch the run's record (metrics.jsonl) holds the ensemble's val/test
accuracy, NLL (as ``*_loss``) and ECE (engine/calibration.py) and each
member's metrics under ``member<k>_``; 'best' is chosen on the ensemble's
validation accuracy. ``check_memory`` estimates the memory K members need
before anything is built.
"""
import dataclasses
import functools
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from mnist_jax import train
from mnist_jax.engine import calibration
from mnist_jax.errors import UserError


def size(config) -> int:
  """K of ``config`` (1: not an ensemble)."""
  return int(config.get('ensemble', {}).get('size', 1))


def member_configs(config) -> list:
  """The K member configs: ``config`` with seed = config.seed + k."""
  out = []
  for k in range(size(config)):
    c = config.copy_and_resolve_references()
    with c.unlocked():
      c.seed = int(config.seed) + k
    out.append(c)
  return out


def expand(configs) -> list:
  """The models a driver group trains for ``configs``: the configs themselves, or
  one ensemble's members (an ensemble trains alone, not as a vectorized trial)."""
  if all(size(c) == 1 for c in configs):
    return list(configs)
  if len(configs) > 1:
    raise UserError('ensembles (config.ensemble.size > 1) train one run at a time; '
                    'run the sweep without --vectorize')
  return member_configs(configs[0])


def is_ensemble(group) -> bool:
  """Whether a driver group is one ensemble run (its K members, one workdir)."""
  return size(group.configs[0]) > 1


def run_state(group, k: int):
  """The state run k checkpoints: the stacked members of an ensemble, else model k."""
  return group.state if is_ensemble(group) else group.member(k)


def load_runs(group, states) -> None:
  """Sets the group's state from the runs' restored states (resuming)."""
  if is_ensemble(group):
    group.state = states[0]
  else:
    group.load_members(states)


def run_value(group, k: int):
  """What run k hands back (plots, api): an Ensemble, or model k's TrainState."""
  return from_group(group) if is_ensemble(group) else group.member(k)


def label(group, k: int) -> str:
  """' (model k)' for vectorized trials, ' (ensemble of K)' for an ensemble, else ''."""
  if is_ensemble(group):
    return f' (ensemble of {group.size})'
  return f' (model {k})' if group.size > 1 else ''


def run_errors(group, errors) -> list:
  """Per run: its UserError or None (an ensemble fails with its first failed member)."""
  if not is_ensemble(group):
    return list(errors)
  for k, e in enumerate(errors):
    if e is not None:
      return [UserError(f'ensemble member {k} (seed {group.configs[k].seed}): {e}')]
  return [None]


# ---- the ensemble as a value: prediction ----------------------------------------------


@dataclasses.dataclass(frozen=True)
class Ensemble:
  """K members of one architecture: ``template`` (a member as a TrainState: model,
  preprocessing) and its variables stacked on axis 0."""
  template: Any
  params: Any
  batch_stats: Any
  ema: Any = dataclasses.field(default_factory=dict)

  @property
  def size(self) -> int:
    return int(jax.tree_util.tree_leaves(self.params)[0].shape[0])

  @property
  def model(self):
    return self.template.model

  @property
  def augment(self):
    return self.template.augment

  def member(self, k: int):
    """Member k as a single TrainState (for plots of its layers)."""
    pick = lambda t: jax.tree_util.tree_map(lambda x: x[k], t)
    return self.template.replace(params=pick(self.params), batch_stats=pick(self.batch_stats),
                                 ema=pick(self.ema))

  def with_ema(self) -> 'Ensemble':
    """The ensemble of the members' EMA weights (itself without an EMA)."""
    if not self.ema:
      return self
    return dataclasses.replace(self, params=self.ema['params'],
                               batch_stats=self.ema['batch_stats'])


def from_group(group) -> Ensemble:
  """The Ensemble of a driver group's stacked members."""
  return from_state(group.state)


def from_state(s) -> Ensemble:
  """The Ensemble of a stacked TrainState (stacked.create's form; a loaded run)."""
  return Ensemble(s.replace(params=None, batch_stats=None, ema=None, opt_state=None),
                  s.params, s.batch_stats, s.ema)


def _signatures(tree) -> dict:
  return {jax.tree_util.keystr(p): f'{np.dtype(x.dtype)}{list(np.shape(x))}'
          for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


def stack(states) -> Ensemble:
  """An Ensemble of single TrainStates of one architecture; UserError naming the
  first array whose shape differs between member 0 and another member."""
  states = list(states)
  if not states:
    raise UserError('an ensemble needs at least one member; pass a list of train states')
  first = _signatures(states[0].variables)
  for k, s in enumerate(states[1:], 1):
    other = _signatures(s.variables)
    if other != first:
      name = min(n for n in {**first, **other} if first.get(n) != other.get(n))
      raise UserError(f'ensemble members disagree on shape: member {k} has {name} '
                      f'{other.get(name, "absent")} where member 0 has '
                      f'{first.get(name, "absent")}; an ensemble needs members of one '
                      'model config (train it with config.ensemble.size = K)')
  st = lambda trees: jax.tree_util.tree_map(lambda *a: jnp.stack(a), *trees)
  ema = st([s.ema for s in states]) if all(s.ema for s in states) else {}
  return Ensemble(states[0], st([s.params for s in states]),
                  st([s.batch_stats for s in states]), ema)


def padded_batches(images, batch_size: int):
  """(batch, n real rows) over ``images`` in order: with more than one batch, the
  last is zero-padded to ``batch_size`` rows, so one compilation serves them all."""
  for i in range(0, len(images), batch_size):
    chunk = images[i:i + batch_size]
    pad = -len(chunk) % batch_size if len(images) > batch_size else 0
    yield np.concatenate([chunk, np.zeros((pad,) + chunk.shape[1:], chunk.dtype)]), len(chunk)


@jax.jit
def _member_probs(template, params, batch_stats, k, images):
  """(B, C): softmax(f(x; w_k)) of member k (one compilation serves every k)."""
  pick = lambda tree: jax.tree_util.tree_map(lambda a: a[k], tree)
  p, b = pick(params), pick(batch_stats)
  variables = {'params': p, 'batch_stats': b} if b else {'params': p}
  return jax.nn.softmax(template.apply_fn(variables, template.inputs(images), train=False))


def member_probabilities(ens: Ensemble, images, *, batch_size: int = 1000) -> np.ndarray:
  """(K, N, C) float32 member probabilities of uint8 images (N, 28, 28, 1) (or
  floats in [0, 1]), in padded batches of ``batch_size``. Members run one after
  another: each costs what its single model costs, and memory holds one member's
  activations at a time (vmapping the members does not evaluate them faster on a CPU)."""
  images = np.asarray(images)
  images = images[..., None] if images.ndim == 3 else images
  out = [np.stack([np.asarray(_member_probs(ens.template, ens.params, ens.batch_stats, k,
                                            x))[:n] for k in range(ens.size)])
         for x, n in padded_batches(images, batch_size)]
  if out:
    return np.concatenate(out, axis=1)
  classes = jax.eval_shape(_member_probs, ens.template, ens.params, ens.batch_stats, 0,
                           np.zeros((1,) + images.shape[1:], np.uint8)).shape[-1]
  return np.zeros((ens.size, 0, classes), np.float32)


def combine(member_probs) -> np.ndarray:
  """The ensemble's probabilities: the mean of the members' (K, N, C) -> (N, C)."""
  return np.mean(np.asarray(member_probs, np.float64), axis=0).astype(np.float32)


def disagreement(member_probs) -> dict:
  """Per image (N,): 'spread' = std_k p_k(ŷ) and 'dissent' = fraction of members
  whose argmax is not the ensemble's ŷ."""
  member_probs = np.asarray(member_probs)
  vote = combine(member_probs).argmax(-1)
  rows = np.arange(member_probs.shape[1])
  return {'spread': member_probs[:, rows, vote].std(axis=0),
          'dissent': np.mean(member_probs.argmax(-1) != vote[None], axis=0)}


# ---- the driver's per-epoch record and the summary -------------------------------------

_OWN = ('epoch', 'train_time_s', 'eval_time_s')


def record(group, member_records, splits, batch_size: int) -> dict:
  """The ensemble run's epoch record from its members' training records (driver)
  and the raw ``splits`` {'val'|'test': (images, labels)}: ensemble metrics at the
  top level (accuracy; loss = NLL of the mean probabilities; nll; ece; the same
  with '_ema'), each member's under ``member<k>_`` (its loss is its NLL too:
  every number comes from one pass of the members' probabilities), train
  metrics averaged over the members."""
  start = time.time()
  first = member_records[0]
  out = {key: first[key] for key in _OWN}
  for key in first:
    if key.startswith('train_') and key != 'train_time_s':
      out[key] = float(np.mean([r[key] for r in member_records]))
  out['images_per_s'] = sum(r['images_per_s'] for r in member_records)
  ens = from_group(group)
  variants = [('', ens)] + ([('_ema', ens.with_ema())] if ens.ema else [])
  for split, (images, labels) in splits.items():
    if not len(labels):
      continue
    for tail, e in variants:
      probs = member_probabilities(e, images, batch_size=batch_size)
      for k, p in [(None, combine(probs))] + list(enumerate(probs)):
        m = calibration.metrics(p, labels)
        target = out if k is None else member_records[k]
        target.update({f'{split}_accuracy{tail}': m['accuracy'],
                       f'{split}_loss{tail}': m['nll'], f'{split}_nll{tail}': m['nll'],
                       f'{split}_ece{tail}': m['ece']})
  for k, r in enumerate(member_records):
    out.update({f'member{k}_{key}': v for key, v in r.items() if key not in _OWN})
  out['eval_time_s'] += time.time() - start
  return out


def summary(group, history) -> dict:
  """summary.json's ensemble block: size, seeds, each member's final metrics and
  their mean, next to the ensemble's own (the run's top-level numbers)."""
  final, k_models = history[-1], group.size
  members = []
  for k in range(k_models):
    prefix = f'member{k}_'
    members.append({'seed': int(group.configs[k].seed),
                    **{key[len(prefix):]: v for key, v in final.items()
                       if key.startswith(prefix) and not key.startswith(prefix + 'train_')}})
  keys = sorted(set.intersection(*(set(m) for m in members)) - {'seed'})
  mean = {key: float(np.mean([m[key] for m in members])) for key in keys}
  return {'ensemble': {'size': k_models, 'seeds': [m['seed'] for m in members],
                       'members': members, 'member_mean': mean,
                       'prediction': 'mean of the members\' softmax probabilities'}}


# ---- memory ------------------------------------------------------------------------------


def _available_bytes() -> int:
  """The first device's memory limit (accelerators) or the host's available memory."""
  stats = None
  try:
    stats = jax.devices()[0].memory_stats()
  except Exception:  # pylint: disable=broad-except  (CPU backends have none)
    stats = None
  if stats and stats.get('bytes_limit'):
    return int(stats['bytes_limit']) - int(stats.get('bytes_in_use', 0))
  return os.sysconf('SC_AVPHYS_PAGES') * os.sysconf('SC_PAGE_SIZE')


def member_bytes(config, num_classes: int = 10) -> dict:
  """Estimated bytes of one member, from shapes only (jax.eval_shape, nothing
  computed): 'state' = params (+ gradient + optimizer state + EMA) and
  'activations' = every layer's output for one training batch, twice (kept for
  the backward pass and its gradient)."""
  model = train.build_model(config, num_classes)
  x = jax.ShapeDtypeStruct((config.batch_size, 28, 28, 1), jnp.float32)
  variables = jax.eval_shape(functools.partial(model.init, train=False),
                             {'params': jax.random.key(0), 'dropout': jax.random.key(0)}, x)
  nbytes = lambda tree: sum(int(np.prod(a.shape)) * np.dtype(a.dtype).itemsize
                            for a in jax.tree_util.tree_leaves(tree) if hasattr(a, 'shape'))
  params = nbytes(variables['params'])
  slots = {'adam': 2, 'adamw': 2, 'momentum': 1, 'nesterov': 1}.get(config.optimizer, 0)
  state = params * (2 + slots + (1 if config.ema_decay else 0)) + 2 * nbytes(
      variables.get('batch_stats', {}))
  outputs = []

  def grab(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    outputs.append(out)
    return out

  def forward(v, x):
    with nn.intercept_methods(grab):
      return model.apply(v, x, train=True, rngs={'dropout': jax.random.key(0)},
                         mutable=['batch_stats'])

  jax.eval_shape(forward, variables, x)
  acts = sum(nbytes(o) for o in outputs)   # nested modules count twice: an upper estimate
  return {'state': state, 'activations': 2 * acts}


def check_memory(config, num_classes: int = 10, available=None) -> None:
  """UserError if ``config.ensemble.size`` members will not fit in memory (90 %
  of the device's free memory, or the host's for CPU), naming the size that fits."""
  k_models = size(config)
  if k_models == 1:
    return
  per = member_bytes(config, num_classes)
  one = per['state'] + per['activations']
  available = _available_bytes() if available is None else available
  budget = 0.9 * available
  if k_models * one <= budget:
    return
  fits = int(budget // one)
  mib = lambda b: f'{b / 2 ** 20:,.0f} MiB'
  raise UserError(
      f'ensemble.size={k_models} needs about {mib(k_models * one)} ({mib(one)} per member: '
      f'{mib(per["state"])} weights and optimizer, {mib(per["activations"])} activations '
      f'of a batch of {config.batch_size}) but {mib(available)} are free; '
      + (f'set config.ensemble.size <= {fits}' if fits >= 1 else
         'not even one member fits: lower config.batch_size') + ' or lower batch_size')
