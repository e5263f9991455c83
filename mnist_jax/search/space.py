"""get_hyper(h) declarations as Optuna parameters (search/hyper.py -> optuna.distributions).

  h.sweep(k, [a, b]), h.choice([a, b])   CategoricalDistribution((a, b))
  h.uniform(lo, hi)                      FloatDistribution(lo, hi)
  h.loguniform(lo, hi)                   FloatDistribution(lo, hi, log=True)

The grid is the declared list itself: each trial's values are a grid point's
fixed parameters, and a key's choices are the values it takes in the list.
Optuna's categorical choices must be None, bool, int, float or str, so any
other value (a tuple such as model.hidden=(512, 256)) is stored as its JSON
text and decoded back. Parameter names are the config keys ('model.dropout_rate').
"""
import json

import optuna

from mnist_jax.errors import UserError

_PLAIN = (type(None), bool, int, float, str)


def encode(value):
  """A value as an Optuna categorical choice."""
  return value if isinstance(value, _PLAIN) else json.dumps(value)


def _categorical(values) -> tuple:
  """(distribution, {encoded: value}) of a list of values."""
  table = {}
  for v in values:
    table.setdefault(encode(v), v)
  return optuna.distributions.CategoricalDistribution(tuple(table)), table


def grid_choices(trials) -> dict:
  """{key: (CategoricalDistribution of the key's values in the list, decode table)}."""
  values = {}
  for t in trials:
    for k, v in t.items():
      values.setdefault(k, []).append(v)
  return {k: _categorical(vs) for k, vs in values.items()}


def distributions(space) -> dict:
  """{key: (Optuna distribution, decode table or None)} of a hyper search space."""
  out = {}
  for key, dist in space.items():
    if dist.kind == 'choice':
      out[key] = _categorical(dist.args[0])
    else:
      low, high = dist.args
      out[key] = (optuna.distributions.FloatDistribution(
          low, high, log=dist.kind == 'loguniform'), None)
  return out


def require_space(trials, sampler: str, path: str) -> dict:
  """The search space a drawing sampler needs, or a UserError naming why none exists."""
  space = getattr(trials, 'space', None)
  if not space:
    raise UserError(f'--sampler={sampler} draws from distributions, but get_hyper in {path} '
                    'couples its keys (h.zipit / h.chainit or a plain list); use h.sweep, '
                    'h.product and h.random there, or run it with --sampler=grid')
  return space


def suggest(trial, choices: dict, keys=None) -> dict:
  """The overrides of ``trial``: each key of ``choices`` (or only ``keys``)
  suggested from its distribution (fixed parameters come back as queued)."""
  overrides = {}
  for key in (choices if keys is None else keys):
    dist, table = choices[key]
    if isinstance(dist, optuna.distributions.CategoricalDistribution):
      overrides[key] = table[trial.suggest_categorical(key, dist.choices)]
    else:
      overrides[key] = trial.suggest_float(key, dist.low, dist.high, log=dist.log)
  return overrides
