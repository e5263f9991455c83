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
list that ``--trial=N`` indexes (``run_trial``): trial number N of the study,
so a process per index (a SLURM array task) and any number of workers share
one queue and one table; a failed trial N is queued again as a new attempt.
A worker, for each trial it pops:

  trains it in WORKDIR/<trial name>/ with the engine (engine/driver.py), while
  a heartbeat says it is alive (search/storage.py); after every epoch reports
  the validation accuracy, and the pruner (asha: SuccessiveHalvingPruner,
  hyperband: HyperbandPruner; min 1 epoch, reduction factor 3) may stop it:
  a pruned trial keeps its metrics, checkpoint and summary (stopped_early);
  tells the study: COMPLETE with the best validation accuracy (the objective,
  maximized), PRUNED, or FAIL with the error (e.g. a diverged loss), with the
  trial's figures (study_table.figures: train/val ones of the best-validation
  epoch, the test accuracy only as the final figure of summary.json) and a log
  line of them.

A trial whose directory already holds summary.json was finished by an earlier
attempt (a worker declared dead that was not): it is told from that summary,
never trained again; the directory's lock makes a retry wait for such a worker.
Without --worker a process waits until no trial is WAITING or RUNNING (so it
retries dead workers' trials and ends with the whole study done); with
--worker it stops when nothing is left to pop.

--vectorize_trials=K: a worker pops up to K trials at once and trains those of
one architecture as one vmapped group (the engine's K-model driver), reporting
each member's epochs to its own trial. A pruned member's trial ends PRUNED at
once (its checkpoint and summary are from that epoch), but the group's program
keeps computing it until every member has stopped: pruning saves a group's time
only when all its members stop.
"""
import dataclasses
import json
import os
import random
import threading
import time
import warnings
from typing import Any

import optuna
from absl import logging

from mnist_jax.config import defaults
from mnist_jax.engine import driver, stacked, workdir as workdir_lib, writers
from mnist_jax.errors import UserError
from mnist_jax.search import hyper, space as space_lib, storage as storage_lib, study_table

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
  old, new = defaults.flat(stored.get('config', {})), defaults.flat(current['config'])
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


def _load(storage, search: Search, seed: int):
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
    study = _load(storage, search, search.seed)
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
                          user_attrs={'index': i, 'overrides': _jsonable(t)})
  else:
    for _ in range(search.size):
      study.enqueue_trial({})


def _jsonable(overrides: dict) -> dict:
  return json.loads(json.dumps(overrides, default=str))


class _Heartbeat:
  """Records the trials' heartbeats every ``interval`` s while in the block."""

  def __init__(self, storage, trial_ids: list):
    self.storage, self.trial_ids = storage, trial_ids
    self.stop = threading.Event()
    self.thread = threading.Thread(target=self._beat, daemon=True)

  def _beat(self):
    interval = self.storage.get_heartbeat_interval()
    while True:
      for trial_id in self.trial_ids:
        try:
          self.storage.record_heartbeat(trial_id)
        except Exception as e:  # pylint: disable=broad-except  (lost connection: keep training)
          logging.warning('heartbeat of trial %d not recorded: %s', trial_id, e)
      if self.stop.wait(interval):
        return

  def __enter__(self):
    self.thread.start()
    return self

  def __exit__(self, *_):
    self.stop.set()
    self.thread.join()


def _report(trial, record, num_epochs: int) -> bool:
  """The engine's per-epoch hook: reports val accuracy; True if the pruner stops
  the trial (never after its last epoch: nothing is left to save)."""
  if record.get('val_accuracy') is None:
    return False
  try:
    trial.report(record['val_accuracy'], record['epoch'])
    return record['epoch'] < num_epochs and trial.should_prune()
  except optuna.exceptions.UpdateFinishedTrialError:
    return False   # declared dead by another worker: finish; the retry reads our summary


def _read_json(path: str):
  """The JSON in ``path``, or None if it is missing or not (yet) whole."""
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def _train(batch: list, poll_s: float):
  """([Outcome], data or None): trains the batch's trials as one group, or reads
  a lone trial's summary left by an earlier attempt."""
  while True:
    summary = _read_json(os.path.join(batch[0].trial_dir, 'summary.json')) \
        if len(batch) == 1 else None
    if summary is not None:
      logging.info('%s holds summary.json: an earlier attempt finished it; not trained again.',
                   batch[0].trial_dir)
      return [driver.Outcome(summary=summary)], None
    try:
      results = driver.train(
          [r.config for r in batch], [r.trial_dir for r in batch],
          on_epoch=lambda k, record: _report(batch[k].trial, record, batch[k].config.num_epochs))
      return results.outcomes, results.data
    except workdir_lib.WorkdirBusy:
      time.sleep(poll_s)   # the earlier attempt's worker still trains here: wait for it
    except UserError as e:
      return [driver.Outcome(error=e) for _ in batch], None


def _tell(run, storage, outcome) -> str:
  """Tells the study how the popped trial ``run`` ended (its figures, as
  study_table.figures records them, go with it); returns the state's name."""
  study, trial = run.study, run.trial
  try:
    if storage.get_trial(run.trial_id).state.is_finished():
      raise optuna.exceptions.UpdateFinishedTrialError('declared dead')
    summary = outcome.summary or {}
    found = study_table.figures(summary, run.trial_dir) if summary else {}
    for column, value in found.items():
      trial.set_user_attr(column, value)
    if outcome.error is not None:
      trial.set_user_attr('error', ' '.join(str(outcome.error).split()))
      state, value = optuna.trial.TrialState.FAIL, None
    elif summary.get('stopped_early'):
      state, value = optuna.trial.TrialState.PRUNED, None
    else:
      state, value = optuna.trial.TrialState.COMPLETE, summary['best_val_accuracy']
    study.tell(trial, value, state=state, skip_if_finished=True)
  except optuna.exceptions.UpdateFinishedTrialError:
    logging.warning('trial %d was declared dead by another worker meanwhile; its retry '
                    'reads the summary this worker left.', trial.number)
    return 'taken over'
  logging.info('trial %d %s: %s', trial.number, state.name.lower(), _figures_line(found))
  return state.name.lower()


def _figures_line(found: dict) -> str:
  """The worker's line of a trial's train/val figures (test: the final figure only)."""
  if 'best_val_accuracy' not in found:
    return 'no validation figures'
  line = (f"best val accuracy {found['best_val_accuracy']:.4f} at epoch "
          f"{found.get('best_epoch')} of {found.get('epochs')}")
  parts = [f'{name} {found[c]:.4f}' for c, name in (
      ('train_loss_at_best_val', 'train loss'), ('train_accuracy_at_best_val', 'train acc'),
      ('val_loss_at_best_val', 'val loss')) if c in found]
  line += f" ({', '.join(parts)})" if parts else ''
  if 'final_test_accuracy' in found:
    line += f"; final test accuracy {found['final_test_accuracy']:.4f} (not used for ranking)"
  return line


def overrides_of(search: Search, trial, frozen) -> dict:
  """The trial's config overrides: its grid point, or values drawn from the space."""
  if search.sampler == 'grid':
    point = dict(search.trials[frozen.user_attrs['index']])
    space_lib.suggest(trial, space_lib.grid_choices(search.trials), keys=point)
    return point
  overrides = space_lib.suggest(trial, space_lib.distributions(search.trials.space))
  trial.set_user_attr('overrides', _jsonable(overrides))
  return overrides


def trial_dir_name(search: Search, overrides: dict, first_number: int) -> str:
  """Grid points are distinct: named by their overrides (as --list does); drawn
  trials may repeat values, so their first attempt's number leads."""
  name = hyper.trial_name(overrides)
  return name if search.sampler == 'grid' else f'{first_number:04d}-{name}'


@dataclasses.dataclass
class _Run:
  """A popped trial, ready to train."""
  study: Any
  trial: Any
  trial_id: int
  number: int
  config: Any
  trial_dir: str
  retry: bool


def _start(storage, search: Search, workdir: str, trial_id: int, frozen) -> _Run:
  """Draws or fixes the popped trial's values and makes its directory."""
  first = frozen.system_attrs.get('failed_trial', frozen.number)
  study = _load(storage, search, search.seed + first)
  study.get_trials(deepcopy=False)   # Optuna's RDB cache learns the trials (the popped one too)
  study.sampler.before_trial(study, frozen)
  trial = optuna.Trial(study, trial_id)
  try:
    overrides = overrides_of(search, trial, frozen)
    name = trial_dir_name(search, overrides, first)
    trial.set_user_attr('dir', name)
    trial_dir = os.path.join(workdir, name)
    config = hyper.apply(search.config, overrides)
    os.makedirs(trial_dir, exist_ok=True)
    writers.write_json_atomic(os.path.join(trial_dir, 'overrides.json'), overrides)
  except BaseException as e:
    _fail(study, trial, e)
    raise
  logging.info('trial %d (%s): training in %s', frozen.number,
               'retry of %d' % first if first != frozen.number else 'first attempt', trial_dir)
  return _Run(study, trial, trial_id, frozen.number, config, trial_dir, first != frozen.number)


def _fail(study, trial, error) -> None:
  if isinstance(error, UserError):
    trial.set_user_attr('error', ' '.join(str(error).split()))
  study.tell(trial, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)


def batches(runs: list) -> list:
  """Popped trials as training groups: those sharing an architecture
  (stacked.signature) train as one vmapped group; a retry (it may resume from a
  checkpoint, or wait for a worker declared dead that is not) and an ensemble
  train alone."""
  alone = lambda r: r.retry or r.config.ensemble.size > 1
  rest = [r for r in runs if not alone(r)]
  return [[r] for r in runs if alone(r)] + [[rest[i] for i in g] for g in stacked.groups(
      [r.config for r in rest])]


def run_group(storage, search: Search, workdir: str, popped: list, poll_s: float = 2.0,
              on_trained=None) -> list:
  """Runs popped trials [(trial_id, frozen)] to their ends, those that can as one
  vmapped group (``batches``); returns [(number, state, error or None)]."""
  runs, ended = [], []
  for trial_id, frozen in popped:
    try:
      runs.append(_start(storage, search, workdir, trial_id, frozen))
    except UserError as e:
      ended.append((frozen.number, 'fail', e))
  for batch in batches(runs):
    try:
      with _Heartbeat(storage, [r.trial_id for r in batch]):
        outcomes, data = _train(batch, poll_s)
    except BaseException as e:
      for r in batch:
        _fail(r.study, r.trial, e)
      raise
    for r, outcome in zip(batch, outcomes):
      state = _tell(r, storage, outcome)
      if outcome.error is None and on_trained is not None and data is not None:
        on_trained(r.config, r.trial_dir, outcome, data)
      ended.append((r.number, state, outcome.error))
  return sorted(ended, key=lambda e: e[0])


def work(storage, search: Search, workdir: str, *, wait: bool = True, poll_s: float = 2.0,
         on_trained=None, after_each=None, vectorize: int = 1) -> list:
  """Pops and runs trials until none is left (``wait``: until none is WAITING
  or RUNNING, retrying dead workers' trials); returns [(number, state, error)].
  ``vectorize``: pops up to that many trials at once and trains those sharing an
  architecture as one vmapped group (run_group). ``after_each()`` runs after
  every pop's trials (the command rewrites the table)."""
  study = _load(storage, search, search.seed)
  study_id = storage.get_study_id_from_name(search.name)
  ran = []
  while True:
    with warnings.catch_warnings():
      warnings.simplefilter('ignore', optuna.exceptions.ExperimentalWarning)
      optuna.storages.fail_stale_trials(study)
    popped = []
    while len(popped) < vectorize and (one := storage_lib.pop(storage, study_id)):
      popped.append(one)
    if not popped:
      states = {t.state for t in storage.get_all_trials(study_id, deepcopy=False)}
      if WAITING in states:
        continue             # another worker took the one we tried; look again
      if not (wait and RUNNING in states):
        return ran
      time.sleep(poll_s)     # a running trial may turn out dead and come back
      continue
    ran += run_group(storage, search, workdir, popped, poll_s=poll_s, on_trained=on_trained)
    if after_each is not None:
      after_each()


def attempts(trials, number: int) -> list:
  """The attempts of queued trial ``number``: itself, then its retries (whose
  ``failed_trial`` is ``number``), in order."""
  return [t for t in trials
          if t.number == number or t.system_attrs.get('failed_trial') == number]


def requeue(study, failed) -> None:
  """Queues another attempt of the failed trial ``failed``, as Optuna's retry
  callbacks do: its parameters and grid point, ``failed_trial`` = the first
  attempt's number, ``retry_history`` = the attempts so far."""
  attrs = {'failed_trial': failed.number, 'retry_history': [], **failed.system_attrs}
  attrs['retry_history'] = list(attrs['retry_history']) + [failed.number]
  study.add_trial(optuna.trial.create_trial(
      state=WAITING, params=failed.params, distributions=failed.distributions,
      user_attrs={k: v for k, v in failed.user_attrs.items() if k in ('index', 'overrides')},
      system_attrs=attrs, intermediate_values=failed.intermediate_values))


def check_trial(search: Search, number: int) -> None:
  """Refuses a ``--trial`` number outside the queue."""
  if not 0 <= number < search.size:
    raise UserError(f'--trial={number} but the study queues {search.size} trials; pass '
                    f'0..{search.size - 1} (see --list)')


def run_trial(storage, search: Search, workdir: str, number: int, *, poll_s: float = 2.0,
              on_trained=None) -> list:
  """Runs queued trial ``number`` of the study (``--trial=N``: the N-th trial of
  the one queue the workers pop, so a scheduler can hand trial N to array task
  N); returns [(number, state, error)] like ``work``.

  Its latest attempt runs if it is WAITING; one that FAILed (an error, or a
  dead worker's) is queued again and run; a finished one (COMPLETE, PRUNED) or
  one another live worker RUNs is left alone (returns [])."""
  check_trial(search, number)
  study = _load(storage, search, search.seed)
  study_id = storage.get_study_id_from_name(search.name)
  with warnings.catch_warnings():
    warnings.simplefilter('ignore', optuna.exceptions.ExperimentalWarning)
    optuna.storages.fail_stale_trials(study)
  latest = attempts(storage.get_all_trials(study_id, deepcopy=False), number)[-1]
  if latest.state == optuna.trial.TrialState.FAIL:
    requeue(study, latest)
    latest = attempts(storage.get_all_trials(study_id, deepcopy=False), number)[-1]
  if latest.state == WAITING:
    trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, latest.number)
    frozen = storage_lib.claim(storage, trial_id)
    if frozen is not None:
      return run_group(storage, search, workdir, [(trial_id, frozen)], poll_s=poll_s,
                       on_trained=on_trained)
  state = storage.get_trial(storage.get_trial_id_from_study_id_trial_number(
      study_id, latest.number)).state.name.lower()
  logging.info('trial %d is %s (attempt %d); not run here.', number, state, latest.number)
  return []
