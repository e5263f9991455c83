"""The search engine: a config's get_hyper(h) as an Optuna study that workers pull trials from.

A study is made once, by the first worker that reaches the storage
(``create_study`` is atomic: the others get DuplicatedStudyError and load it).
The maker records what the study searches (the config, the trial list, the
sampler, the pruner) and queues every trial it will ever run as a WAITING
trial, then marks the study ready:

  --sampler=grid     one trial per point of the declared list, its values as
                     fixed parameters (Optuna's GridSampler is the study's
                     sampler, so the dashboard and study.optimize see a grid),
                     queued in a random order seeded by --sampler_seed, as
                     GridSampler itself draws points: a pruner compares a trial
                     only with the trials that reached its rung before it, and
                     a declared list is often sorted (η from small to large),
                     the order in which every next trial looks best so far and
                     asynchronous successive halving stops almost none
  --sampler=random   --n_trials empty trials (default: the list's length); each
  --sampler=tpe      draws its values when a worker pops it, from the
                     distributions of get_hyper (search/space.py), seeded by
                     (--sampler_seed + trial number); TPE (constant liar, so
                     concurrent workers spread out) starts with n/3 random ones

Workers only ever pop queued trials, never ask the sampler for a new one, so
the study runs exactly its trials: N workers on a 6-point grid run 6 trials
(GridSampler alone re-runs points when workers race). The queue is also the
list that ``--trial=N`` indexes (worker.run_trial): trial number N of the study,
so a process per index (a SLURM array task) and any number of workers share
one queue and one table; a failed trial N is queued again as a new attempt.
The workers that run it are search/worker.py.
"""
import dataclasses
import json
import random
import time
import warnings
from typing import Any

import optuna
from absl import logging

from mnist_jax.config import overrides
from mnist_jax.errors import UserError
from mnist_jax.search import space as space_lib

SAMPLERS = ('grid', 'random', 'tpe')
PRUNERS = ('none', 'asha', 'hyperband')
REDUCTION_FACTOR = 3
MIN_EPOCHS = 1
ATTR, READY = 'mnist_jax', 'mnist_jax:queued'
WAITING, RUNNING = optuna.trial.TrialState.WAITING, optuna.trial.TrialState.RUNNING


@dataclasses.dataclass(frozen=True)
class Search:
  """What a study searches and how."""
  name: str              # the study's name in the storage
  trials: list           # get_hyper's list (a hyper.Trials)
  config: Any            # the base config (command-line overrides applied)
  sampler: str = 'grid'
  pruner: str = 'none'
  n_trials: int = 0      # random / tpe: how many (0: len(trials)); grid: the list
  seed: int = 0
  source: str = 'the config'   # where get_hyper lives, for messages

  @property
  def size(self) -> int:
    return len(self.trials) if self.sampler == 'grid' else (self.n_trials or len(self.trials))


def check(search: Search) -> None:
  """Refuses an unknown sampler or pruner, a drawing sampler without a search
  space, a bad --n_trials, or a config without a validation split."""
  if search.sampler not in SAMPLERS:
    raise UserError(f'unknown --sampler={search.sampler}; pass one of {", ".join(SAMPLERS)}')
  if search.pruner not in PRUNERS:
    raise UserError(f'unknown --pruner={search.pruner}; pass one of {", ".join(PRUNERS)}')
  if search.n_trials < 0 or (search.n_trials and search.sampler == 'grid'):
    raise UserError(f'--n_trials={search.n_trials}: pass a positive count with '
                    '--sampler=random|tpe (a grid runs its whole list)')
  if search.sampler != 'grid':
    space_lib.require_space(search.trials, search.sampler, search.source)
  if search.config.data.val_size <= 0:
    raise UserError('a study ranks trials by validation accuracy, but config.data.val_size '
                    'is 0; set --config.data.val_size=5000')


def identity(search: Search) -> dict:
  """What the study searches, as stored with it (JSON)."""
  return json.loads(json.dumps({
      'config': json.loads(search.config.to_json_best_effort()),
      'trials': list(search.trials), 'sampler': search.sampler, 'pruner': search.pruner,
      'n_trials': search.size, 'seed': search.seed}, default=str))


def _differences(stored: dict, current: dict) -> list:
  diff = [k for k in ('trials', 'sampler', 'pruner', 'n_trials', 'seed')
          if stored.get(k) != current.get(k)]
  old, new = overrides.flat(stored.get('config', {})), overrides.flat(current['config'])
  diff += [f'config.{k}' for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
  return diff


def sampler(search: Search, seed: int):
  """The Optuna sampler of the study (seeded)."""
  if search.sampler == 'grid':
    choices = space_lib.grid_choices(search.trials)
    return optuna.samplers.GridSampler({k: list(d.choices) for k, (d, _) in choices.items()},
                                       seed=seed)
  if search.sampler == 'random':
    return optuna.samplers.RandomSampler(seed=seed)
  with warnings.catch_warnings():
    warnings.simplefilter('ignore', optuna.exceptions.ExperimentalWarning)
    return optuna.samplers.TPESampler(seed=seed, constant_liar=True,
                                      n_startup_trials=max(1, search.size // 3))


def pruner(search: Search, num_epochs: int):
  """The Optuna pruner of the study (its rungs count epochs)."""
  if search.pruner == 'asha':
    return optuna.pruners.SuccessiveHalvingPruner(min_resource=MIN_EPOCHS,
                                                  reduction_factor=REDUCTION_FACTOR)
  if search.pruner == 'hyperband':
    return optuna.pruners.HyperbandPruner(min_resource=MIN_EPOCHS, max_resource=num_epochs,
                                          reduction_factor=REDUCTION_FACTOR)
  return optuna.pruners.NopPruner()


def load(storage, search: Search, seed: int):
  """The study, its sampler seeded with ``seed``."""
  return optuna.load_study(study_name=search.name, storage=storage,
                           sampler=sampler(search, seed),
                           pruner=pruner(search, search.config.num_epochs))


def open_study(storage, search: Search, where: str, wait_s: float = 120.0):
  """Creates the study and queues its trials, or loads it and checks that it
  searches the same thing; returns it."""
  try:
    study = optuna.create_study(storage=storage, study_name=search.name, direction='maximize',
                                sampler=sampler(search, search.seed),
                                pruner=pruner(search, search.config.num_epochs))
  except optuna.exceptions.DuplicatedStudyError:
    study = load(storage, search, search.seed)
  else:
    study.set_user_attr(ATTR, identity(search))
    _queue(study, search)
    study.set_user_attr(READY, search.size)
    logging.info('study %s created in %s with %d queued trials.', search.name, where,
                 search.size)
    return study
  deadline = time.time() + wait_s
  while READY not in study.user_attrs:
    if ATTR not in study.user_attrs and study.get_trials(deepcopy=False):
      raise UserError(f'study {search.name!r} in {where} was not made by mnist_jax.sweep; '
                      'pass another --study_name')
    if time.time() > deadline:
      raise UserError(f'study {search.name!r} in {where} was created but its trials were '
                      'never queued (its maker stopped); delete it (optuna delete-study '
                      f'--study-name {search.name} --storage URL) and run again')
    time.sleep(0.5)
  diff = _differences(study.user_attrs[ATTR], identity(search))
  if diff:
    raise UserError(f'study {search.name!r} in {where} was created by another config or search '
                    f'(differs in {", ".join(diff[:6])}); pass another --study_name or '
                    '--workdir, or the same config and flags')
  return study


def grid_order(n: int, seed: int) -> list:
  """The order in which a grid's n declared points are queued (seeded)."""
  order = list(range(n))
  random.Random(seed).shuffle(order)
  return order


def _queue(study, search: Search) -> None:
  if search.sampler == 'grid':
    for i in grid_order(len(search.trials), search.seed):
      t = search.trials[i]
      study.enqueue_trial({k: space_lib.encode(v) for k, v in t.items()},
                          user_attrs={'index': i, 'overrides': jsonable(t)})
  else:
    for _ in range(search.size):
      study.enqueue_trial({})


def jsonable(overrides: dict) -> dict:
  return json.loads(json.dumps(overrides, default=str))


def check_trial(search: Search, number: int) -> None:
  """Refuses a ``--trial`` number outside the queue."""
  if not 0 <= number < search.size:
    raise UserError(f'--trial={number} but the study queues {search.size} trials; pass '
                    f'0..{search.size - 1} (see --list)')
