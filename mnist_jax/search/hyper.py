"""Sweep declarations: a config file's ``get_hyper(h)`` returns a list of trials.

A trial is a dict of config overrides, dotted key -> value. The functions below build
such lists the way big_vision / XManager configs do::

  def get_hyper(h):
    return h.product([
        h.sweep('config.learning_rate', [1e-3, 3e-3]),
        h.zipit([h.sweep('config.model.dropout_rate', [0.0, 0.25]),
                 h.sweep('config.weight_decay', [0.0, 1e-4])]),
    ])                                  # 2 x 2 = 4 trials

  sweep(k, [a, b])        [{k: a}, {k: b}]
  product([S1, S2, ...])  every combination: |S1| · |S2| · ... trials (cartesian product)
  zipit([S1, S2, ...])    the i-th trial of each, merged: |S1| = |S2| = ... trials
  chainit([S1, S2, ...])  S1 then S2 then ...: |S1| + |S2| + ... trials
  random(k, dist, n, seed)  n independent samples of dist (reproducible from seed)

Distributions: uniform(a, b): x ~ U(a, b); loguniform(a, b): log x ~ U(log a, log b),
so each decade between a and b gets the same number of samples (the usual
prior for η and λ); choice([...]): uniform over a list. Random floats are
rounded to 4 significant digits so that trial names stay readable.
Keys may be written 'config.x' or 'x'; they are stored without 'config.'.
``trial_name(overrides)`` names a trial's directory; ``apply(config, overrides)``
makes its config (an unknown key is a UserError).

Each returns a ``Trials`` list that also remembers its search space,
``trials.space``: {key: distribution} (a swept key is a choice of its values), or
None where keys are coupled (zipit, chainit) and only the listed trials exist.
Samplers that draw new points (search/study.py: random, TPE) need the space; the
grid runs the list itself.
"""
import hashlib
import importlib.util
import itertools
import json
import math
import re
import sys
import uuid

import numpy as np

from mnist_jax import models
from mnist_jax.config import overrides as config_overrides
from mnist_jax.errors import UserError

SIGNIFICANT_DIGITS = 4


def load(config_path: str) -> list:
  """The trials ``get_hyper(h)`` of the config file returns (a Trials: its
  ``space`` is the search space, or None); ``config_path`` may carry ml_collections'
  ':override' tail."""
  path = config_path.split(':')[0]
  spec = importlib.util.spec_from_file_location(f'_sweep_{uuid.uuid4().hex}', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, 'get_hyper'):
    raise UserError(f'{path} defines no get_hyper(h); add one returning e.g. '
                    "h.sweep('config.learning_rate', [1e-3, 3e-3]) (see mnist_jax/search/hyper.py)")
  trials = module.get_hyper(sys.modules[__name__])   # h: this module
  if not trials or not all(isinstance(t, dict) for t in trials):
    raise UserError(f'get_hyper in {path} returned {type(trials).__name__}; return a '
                    'non-empty list of dicts such as h.product([...])')
  return Trials([{canonical_key(k): v for k, v in t.items()} for t in trials], space_of(trials))


def canonical_key(key: str) -> str:
  """'config.model.x' -> 'model.x'."""
  if not isinstance(key, str) or not key:
    raise UserError(f'sweep key {key!r} is not a string; write keys like '
                    "'config.learning_rate'")
  return key[len('config.'):] if key.startswith('config.') else key


class Trials(list):
  """A list of trials (dicts of overrides) and its search space ``space``:
  {key: distribution}, or None where the keys are coupled."""

  def __init__(self, trials=(), space=None):
    super().__init__(trials)
    self.space = space


def space_of(trials):
  """The search space of a get_hyper result: {key: distribution} or None."""
  return getattr(trials, 'space', None)


def sweep(key: str, values) -> list:
  """One trial per value of ``key``."""
  values = list(values)
  return Trials([{canonical_key(key): v} for v in values], {canonical_key(key): choice(values)})


def fixed(key: str, value) -> list:
  """A single trial setting ``key`` (useful inside product/zipit)."""
  return sweep(key, [value])


def _merge(parts) -> dict:
  out = {}
  for part in parts:
    clash = set(out) & set(part)
    if clash:
      raise UserError(f"sweep key {', '.join(sorted(clash))} is set twice in one trial; "
                      'sweep each key in only one branch of product/zipit')
    out.update(part)
  return out


def product(sweeps) -> list:
  """Every combination of one trial from each sweep (cartesian product)."""
  sweeps = list(sweeps)
  trials = [_merge(parts) for parts in itertools.product(*sweeps)]
  spaces = [space_of(s) for s in sweeps]
  return Trials(trials, None if None in spaces else _merge(spaces))


def zipit(sweeps) -> list:
  """The i-th trials of all sweeps merged; the sweeps must have equal lengths."""
  sweeps = list(sweeps)
  lengths = sorted({len(s) for s in sweeps})
  if len(lengths) > 1:
    raise UserError(f'zipit got sweeps of lengths {lengths}; give every zipped sweep '
                    'the same number of values')
  return Trials(_merge(parts) for parts in zip(*sweeps))


def chainit(sweeps) -> list:
  """The trials of each sweep, one sweep after another."""
  return Trials(dict(t) for s in sweeps for t in s)


class _Dist:
  """A distribution: ``sample(rng)`` with a numpy Generator; ``kind`` and
  ``args`` say which ('uniform', (a, b)), ('loguniform', (a, b)), ('choice', (values,))."""

  def __init__(self, name, sample_fn, kind, args):
    self.name, self.sample, self.kind, self.args = name, sample_fn, kind, args

  def __repr__(self):
    return self.name


def _round(x: float) -> float:
  return float(f'{x:.{SIGNIFICANT_DIGITS}g}')


def uniform(low: float, high: float) -> _Dist:
  """x ~ U(low, high)."""
  return _Dist(f'uniform({low}, {high})', lambda rng: _round(rng.uniform(low, high)),
               'uniform', (low, high))


def loguniform(low: float, high: float) -> _Dist:
  """log x ~ U(log low, log high), low > 0."""
  if not 0 < low < high:
    raise UserError(f'loguniform({low}, {high}) needs 0 < low < high; '
                    'e.g. loguniform(1e-4, 1e-2)')
  return _Dist(f'loguniform({low}, {high})', lambda rng: _round(
      math.exp(rng.uniform(math.log(low), math.log(high)))), 'loguniform', (low, high))


def choice(values) -> _Dist:
  """One of ``values``, each with probability 1/len(values)."""
  values = list(values)
  return _Dist(f'choice({values})', lambda rng: values[int(rng.integers(len(values)))],
               'choice', (values,))


def random(key, dist=None, *, n: int, seed: int = 0) -> list:
  """``n`` trials with ``key`` sampled from ``dist``; ``key`` may instead be a
  dict {key: dist} to sample several keys jointly. Same seed, same trials."""
  dists = key if isinstance(key, dict) else {key: dist}
  for k, d in dists.items():
    if not isinstance(d, _Dist):
      raise UserError(f'random({k!r}, ...) needs a distribution such as '
                      'h.loguniform(1e-4, 1e-2), h.uniform(0, 0.5) or h.choice([...])')
  rng = np.random.default_rng(seed)
  return Trials([{canonical_key(k): d.sample(rng) for k, d in dists.items()} for _ in range(n)],
                {canonical_key(k): d for k, d in dists.items()})


def _format(value) -> str:
  if isinstance(value, bool):
    return str(value).lower()
  if isinstance(value, float):
    return f'{value:.6g}'
  if isinstance(value, (list, tuple)):
    return '-'.join(_format(v) for v in value)
  return str(value)


def trial_name(overrides: dict) -> str:
  """A stable, filesystem-safe directory name from the overrides, e.g.
  'learning_rate=0.003,model.dropout_rate=0.25'. Keys are sorted; a short hash
  of the exact values is appended when the name would be lossy or too long."""
  if not overrides:
    return 'base'
  parts = [f'{k}={_format(overrides[k])}' for k in sorted(overrides)]
  name = re.sub(r'[^A-Za-z0-9._=,+-]', '_', ','.join(parts))
  lossy = any(isinstance(v, float) and float(_format(v)) != v for v in overrides.values())
  if lossy or len(name) > 100 or name != ','.join(parts):
    digest = hashlib.sha1(json.dumps(overrides, sort_keys=True, default=str).encode())
    name = f'{name[:90]}-{digest.hexdigest()[:8]}'
  return name


def apply(config, overrides: dict):
  """A copy of ``config`` with dotted-key ``overrides``; unknown keys are errors
  (config/overrides.py, the one override applier)."""
  return config_overrides.apply(config, overrides, kind='sweep key', may_add=model_option)


def model_option(config, key: str) -> bool:
  """Whether ``key`` is 'model.<option>' of the config's model (a sweep may set
  a model option that the config leaves at the model's default)."""
  parent, _, leaf = key.rpartition('.')
  return parent == 'model' and leaf in models.options(models.get_class(config.model.name))
