"""The study's workers: pop queued trials (search/study.py), train them with the engine, tell the study.

A worker, for each trial it pops:

  trains it in WORKDIR/<trial name>/ with the engine (engine/trainer.py), while
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
one architecture as one vmapped group (engine/stacked.py), reporting
each member's epochs to its own trial. A pruned member's trial ends PRUNED at
once (its checkpoint and summary are from that epoch), but the group's program
keeps computing it until every member has stopped: pruning saves a group's time
only when all its members stop.
"""
import dataclasses
import json
import os
import threading
import time
import warnings
from typing import Any

import optuna
from absl import logging

from mnist_jax.engine import stacked, trainer
from mnist_jax.store import selection, workdir as workdir_lib, writers
from mnist_jax.errors import UserError
from mnist_jax.search import hyper, space as space_lib, storage as storage_lib, study_table
from mnist_jax.search.study import RUNNING, WAITING, Search, check_trial, jsonable, load


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


def _report(trial, record, config) -> bool:
  """The engine's per-epoch hook: reports the validation accuracy of the run's
  model weights (store/selection.py's score, the one the best epoch is chosen
  by); True if the pruner stops the trial (never after its last epoch: nothing
  is left to save)."""
  value = selection.score(record, config.model_weights)
  if value is None:
    return False
  try:
    trial.report(value, record['epoch'])
    return record['epoch'] < config.num_epochs and trial.should_prune()
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
      return [trainer.Outcome(summary, None, None)], None
    try:
      outcomes = stacked.train(
          [r.config for r in batch], [r.trial_dir for r in batch],
          on_epoch=lambda k, record: _report(batch[k].trial, record, batch[k].config))
      return outcomes, outcomes[0].data
    except workdir_lib.WorkdirBusy:
      time.sleep(poll_s)   # the earlier attempt's worker still trains here: wait for it
    except UserError as e:
      return [trainer.Outcome(None, None, None, e) for _ in batch], None


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
  trial.set_user_attr('overrides', jsonable(overrides))
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
  study = load(storage, search, search.seed + first)
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
  study = load(storage, search, search.seed)
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


def run_trial(storage, search: Search, workdir: str, number: int, *, poll_s: float = 2.0,
              on_trained=None) -> list:
  """Runs queued trial ``number`` of the study (``--trial=N``: the N-th trial of
  the one queue the workers pop, so a scheduler can hand trial N to array task
  N); returns [(number, state, error)] like ``work``.

  Its latest attempt runs if it is WAITING; one that FAILed (an error, or a
  dead worker's) is queued again and run; a finished one (COMPLETE, PRUNED) or
  one another live worker RUNs is left alone (returns [])."""
  check_trial(search, number)
  study = load(storage, search, search.seed)
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
