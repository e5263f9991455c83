"""Where a study lives: one Optuna storage, with heartbeats, from a URL.

  (no --storage)                     sqlite:///WORKDIR/study.db   one machine, nothing to start
  postgresql+psycopg2://U:P@H/DB      any SQLAlchemy URL (PostgreSQL, MySQL) for a cluster
  journal:PATH                       Optuna's journal file on a shared filesystem

Every worker records a heartbeat every ``heartbeat_s`` seconds while it trains
a trial. A RUNNING trial whose heartbeat is older than ``grace_s`` belongs to a
worker that died (SIGKILL, lost node): the next worker that looks for work
marks it FAIL and queues a copy (Optuna's RetryHeartbeatStaleTrialCallback,
``retry_of`` = the first attempt), which resumes from the trial's checkpoints.
The storage decides who gets a queued trial: of two workers that pop it, only
one switches it from WAITING to RUNNING —

  PostgreSQL / MySQL   SELECT ... FOR UPDATE (Optuna's own row lock)
  SQLite               no row locks, so every transaction here starts with
                       BEGIN IMMEDIATE (the database's write lock): the read and
                       the write of a pop cannot interleave with another
                       worker's (without it, two workers popped one trial)
  journal              the order of the log: the first RUNNING entry wins

Optuna's RDBStorage has heartbeats; its JournalStorage has none, so
``_JournalHeartbeat`` adds them as a trial system attribute (wall-clock time:
the machines' clocks must agree, as NTP keeps them).
"""
import contextlib
import os
import time
import warnings

import filelock
import optuna
import sqlalchemy
from optuna.storages import journal
from optuna.storages._heartbeat import BaseHeartbeat  # Optuna's extension point for heartbeats

from mnist_jax import extras
from mnist_jax.errors import UserError

JOURNAL = 'journal:'
HEARTBEAT_ATTR = 'mnist_jax:heartbeat'
MAX_RETRY = 3          # attempts after the first, for a trial whose workers keep dying


def url_for(workdir: str, storage: str = '') -> str:
  """The storage URL: ``storage`` if given, else SQLite in ``workdir/study.db``."""
  if storage:
    return storage
  if not workdir:
    raise UserError('the study needs --workdir (its SQLite study.db lives there) or --storage')
  return f'sqlite:///{os.path.abspath(os.path.join(workdir, "study.db"))}'


def redact(url: str) -> str:
  """The URL without its password, for messages."""
  if url.startswith(JOURNAL) or url.startswith('sqlite'):
    return url
  try:
    return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
  except sqlalchemy.exc.ArgumentError:
    return url


def _serialize_sqlite(engine) -> None:
  """Every transaction takes SQLite's write lock first (BEGIN IMMEDIATE)."""

  @sqlalchemy.event.listens_for(engine, 'connect')
  def _connect(dbapi_connection, _):
    dbapi_connection.isolation_level = None    # pysqlite: we issue BEGIN ourselves

  @sqlalchemy.event.listens_for(engine, 'begin')
  def _begin(connection):
    connection.exec_driver_sql('BEGIN IMMEDIATE')

  engine.dispose()  # the pool's connections opened before the listeners


class _JournalHeartbeat(journal.JournalStorage, BaseHeartbeat):
  """A journal storage whose RUNNING trials carry a heartbeat time."""

  def __init__(self, backend, heartbeat_s: int, grace_s: int, callback):
    super().__init__(backend)
    self._heartbeat_s, self._grace_s, self._callback = heartbeat_s, grace_s, callback

  def record_heartbeat(self, trial_id: int) -> None:
    try:
      self.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())
    except optuna.exceptions.UpdateFinishedTrialError:
      pass   # another worker declared the trial dead; our tell is skipped too

  def _get_stale_trial_ids(self, study_id: int) -> list:
    now, stale = time.time(), []
    for t in self.get_all_trials(study_id, deepcopy=False,
                                 states=(optuna.trial.TrialState.RUNNING,)):
      last = t.system_attrs.get(HEARTBEAT_ATTR, t.datetime_start.timestamp())
      if now - last > self._grace_s:
        stale.append(t._trial_id)  # pylint: disable=protected-access
    return stale

  def get_heartbeat_interval(self) -> int:
    return self._heartbeat_s

  def get_heartbeat_stale_trial_callback(self):
    return self._callback


def _open_journal(path: str, heartbeat_s, grace_s, callback):
  folder = os.path.dirname(os.path.abspath(path))
  if not os.path.isdir(folder):
    raise UserError(f'the journal file {path} is in a folder that does not exist; create '
                    f'{folder} (on a filesystem every worker sees) or pass another path')
  backend = journal.JournalFileBackend(path)
  return _JournalHeartbeat(backend, heartbeat_s, grace_s, callback)


def _open_rdb(url: str, heartbeat_s, grace_s, callback):
  sqlite = url.startswith('sqlite')
  kwargs = {'connect_args': {'timeout': 60}} if sqlite else {'pool_pre_ping': True}
  if sqlite:
    path = url[len('sqlite:///'):]
    if not os.path.isdir(os.path.dirname(path) or '.'):
      raise UserError(f'the folder of {path} does not exist; create it or pass another '
                      '--workdir / --storage')
  last = None
  for attempt in range(5):   # workers creating the tables at once: one wins, the others retry
    try:
      with filelock.FileLock(f'{path}.lock') if sqlite else contextlib.nullcontext():
        storage = optuna.storages.RDBStorage(
            url, engine_kwargs=kwargs, heartbeat_interval=heartbeat_s, grace_period=grace_s,
            heartbeat_stale_trial_callback=callback)
      if sqlite:
        _serialize_sqlite(storage.engine)
      return storage
    except (sqlalchemy.exc.OperationalError, sqlalchemy.exc.IntegrityError,
            sqlalchemy.exc.ProgrammingError) as e:
      last = e
      if 'already exists' not in str(e) and 'duplicate key' not in str(e):
        break
      time.sleep(0.5 * (attempt + 1))
  first = str(getattr(last, 'orig', last)).strip().splitlines()[0]
  raise UserError(f'cannot open the study storage {redact(url)} ({first}); check the URL, '
                  'that the database server runs and accepts this user') from None


def open_storage(url: str, heartbeat_s: int = 30, grace_s: int = 120):
  """The Optuna storage at ``url`` with heartbeats and retries of dead workers' trials."""
  if heartbeat_s < 1 or grace_s <= heartbeat_s:
    raise UserError(f'--heartbeat_s={heartbeat_s} --grace_s={grace_s}: need heartbeat_s >= 1 '
                    'and grace_s > heartbeat_s (e.g. 30 and 120)')
  with warnings.catch_warnings():   # heartbeats and the retry callback are "experimental"
    warnings.simplefilter('ignore', optuna.exceptions.ExperimentalWarning)
    callback = optuna.storages.RetryHeartbeatStaleTrialCallback(
        max_retry=MAX_RETRY, inherit_intermediate_values=True)
    if url.startswith(JOURNAL):
      return _open_journal(url[len(JOURNAL):], heartbeat_s, grace_s, callback)
    try:
      driver = sqlalchemy.engine.make_url(url).get_driver_name()
    except sqlalchemy.exc.ArgumentError:
      raise UserError(f'--storage={url} is neither a database URL nor journal:PATH; pass e.g. '
                      'postgresql+psycopg2://user:pass@host/db or journal:/shared/study.log'
                      ) from None
    if driver in extras.EXTRAS:   # psycopg2: the postgres extra
      extras.require(driver, f'the study storage {redact(url)}')
    try:
      return _open_rdb(url, heartbeat_s, grace_s, callback)
    except (ImportError, sqlalchemy.exc.NoSuchModuleError) as e:
      raise UserError(f'cannot open the study storage {redact(url)}: no driver for it ({e}); '
                      'install the driver its URL names') from None


def claim(storage, trial_id: int):
  """The frozen trial ``trial_id`` if this process switched it from WAITING to
  RUNNING (the storage lets only one process do so), else None."""
  try:
    # A heartbeat first: Optuna never calls a RUNNING trial without one stale, so a
    # worker killed between its pop and its first beat would lose the trial.
    storage.record_heartbeat(trial_id)
    if storage.set_trial_state_values(trial_id, state=optuna.trial.TrialState.RUNNING):
      return storage.get_trial(trial_id)
  except optuna.exceptions.UpdateFinishedTrialError:
    pass
  return None


def pop(storage, study_id: int):
  """(trial_id, frozen trial) of a WAITING trial that this process claimed, or
  None if none is left."""
  for frozen in storage.get_all_trials(study_id, deepcopy=False,
                                       states=(optuna.trial.TrialState.WAITING,)):
    trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, frozen.number)
    claimed = claim(storage, trial_id)
    if claimed is not None:
      return trial_id, claimed
  return None
