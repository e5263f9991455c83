"""How the driver's group of K models forms its runs: R runs of M members each.

Chosen once, up front (``layout``): vectorized trials and a single run are
R = K runs of M = 1 model; an ensemble run (config.ensemble.size = M > 1) is
R = 1 run of its M members, which train as the group's K = M models. Run r owns
models r·M .. (r + 1)·M − 1; its epoch record is

  train_<m>      (1/M) Σ_k train_<m>_k    (the members' mean; M = 1: the model's)
  images_per_s   Σ_k images_per_s_k
  member<k>_*    each member's own metrics (M > 1 only)

next to the split metrics of the one evaluation pass (engine/evaluation.py),
and its checkpoint holds its M models (M = 1: the single TrainState; M > 1:
the stacked members, engine/ensemble.py). The driver treats every run alike.
"""
import dataclasses

import numpy as np

from mnist_jax.engine import ensemble
from mnist_jax.errors import UserError

_OWN = ('epoch', 'train_time_s', 'eval_time_s')


@dataclasses.dataclass(frozen=True)
class Layout:
  """R runs of M members (K = R·M models)."""
  runs: int
  members: int


def expand(configs) -> list:
  """The models a driver group trains for ``configs``: the configs themselves, or
  one ensemble's members (an ensemble trains alone, not as a vectorized trial)."""
  if all(ensemble.size(c) == 1 for c in configs):
    return list(configs)
  if len(configs) > 1:
    raise UserError('ensembles (config.ensemble.size > 1) train one run at a time; '
                    'run the sweep without --vectorize')
  return ensemble.member_configs(configs[0])


def layout(configs) -> Layout:
  """The Layout of the runs ``configs`` (after ``expand``'s check)."""
  expand(configs)
  return Layout(runs=len(configs), members=ensemble.size(configs[0]))


def run_state(group, lay: Layout, r: int):
  """The state run r checkpoints: model r's TrainState, or the stacked members."""
  return group.member(r) if lay.members == 1 else group.state


def group_state(group, lay: Layout, states):
  """The group's state made of the runs' states (checkpoint form), unchanged group."""
  return group.stack_members(states) if lay.members == 1 else states[0]


def load_runs(group, lay: Layout, states) -> None:
  """Sets the group's state from the runs' restored states (resuming)."""
  group.state = group_state(group, lay, states)


def run_value(group, lay: Layout, r: int):
  """What run r hands back (plots, api): model r's TrainState, or an Ensemble."""
  return group.member(r) if lay.members == 1 else ensemble.from_state(group.state)


def label(group, lay: Layout, r: int) -> str:
  """' (model r)' for vectorized trials, ' (ensemble of M)' for an ensemble, else ''."""
  if lay.members > 1:
    return f' (ensemble of {lay.members})'
  return f' (model {r})' if lay.runs > 1 else ''


def run_errors(group, lay: Layout, errors) -> list:
  """Per run: its UserError or None (a run fails with its first failed member)."""
  if lay.members == 1:
    return list(errors)
  out = []
  for r in range(lay.runs):
    failed = [(k, e) for k, e in enumerate(errors[r * lay.members:(r + 1) * lay.members])
              if e is not None]
    out.append(UserError(f'ensemble member {failed[0][0]} (seed '
                         f'{group.configs[failed[0][0]].seed}): {failed[0][1]}')
               if failed else None)
  return out


def model_mask(lay: Layout, run_flags) -> np.ndarray:
  """(K,) bools: each model carries its run's flag (R,)."""
  return np.repeat(np.asarray(run_flags, bool), lay.members)


def train_record(lay: Layout, r: int, model_records) -> dict:
  """Run r's training part of the epoch record from its models' (see the module)."""
  mine = model_records[r * lay.members:(r + 1) * lay.members]
  out = {key: mine[0][key] for key in _OWN}
  for key in mine[0]:
    if key.startswith('train_') and key != 'train_time_s':
      out[key] = float(np.mean([m[key] for m in mine]))
  out['images_per_s'] = float(sum(m['images_per_s'] for m in mine))
  if lay.members > 1:
    for k, m in enumerate(mine):
      out.update({f'member{k}_{key}': v for key, v in m.items() if key not in _OWN})
  return out


def summary(group, lay: Layout, final: dict) -> dict:
  """summary.json's ensemble block (M > 1; else {}): size, seeds, each member's
  final metrics and their mean, next to the ensemble's own (the run's top level)."""
  if lay.members == 1:
    return {}
  members = []
  for k in range(lay.members):
    prefix = f'member{k}_'
    members.append({'seed': int(group.configs[k].seed),
                    **{key[len(prefix):]: v for key, v in final.items()
                       if key.startswith(prefix) and not key.startswith(prefix + 'train_')}})
  keys = sorted(set.intersection(*(set(m) for m in members)) - {'seed'})
  mean = {key: float(np.mean([m[key] for m in members])) for key in keys}
  return {'ensemble': {'size': lay.members, 'seeds': [m['seed'] for m in members],
                       'members': members, 'member_mean': mean,
                       'prediction': "mean of the members' class distributions q "
                                     '(train.probabilities)'}}
