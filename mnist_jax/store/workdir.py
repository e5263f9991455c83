"""The run directory as a trainer writes it: made writable, held by one process,
resumed, and its epochs recorded.

  prepare(workdir)          creates it and checks that it is writable, before any work
  lock(workdir)             an exclusive lock held while a process trains in it
  check_resume(...)         refuses a resume that would change the run or that finds a
                            damaged config.json or metrics.jsonl (reads only)
  claim(workdir)            names the holder in the lock file, once the checks passed
  RunFiles                  one run's files while it trains: ``open`` and ``resume``
                            read only; ``begin`` claims the lock and writes config.json
                            and metrics.jsonl; ``record`` adds an epoch (metrics,
                            'latest' and 'best' checkpoints)

  workdir/config.json              the run's ConfigDict (to_json_best_effort)
  workdir/metrics.jsonl            one JSON record per finished epoch
  workdir/checkpoints/latest/<e>   the last config.keep_checkpoints epochs (orbax)
  workdir/checkpoints/best/<e>     e*, the best epoch by validation (store/selection.py)
  workdir/summary.json             written once, at the end (engine/summary.py)

engine/rundir.py reads such a directory back for whatever uses the run.

The lock is ``fcntl.flock`` on ``workdir/.lock`` (on Linux's NFS client it
becomes a POSIX byte-range lock, so it also holds on a shared filesystem);
the kernel drops it when the holder exits, even on SIGKILL, so there is no
stale lock to clean up. The file names its holder (host, pid, start time),
written by ``claim`` once every check of a resume has passed: a refused
command leaves even the lock file as it found it. In a multi-host run only
process 0 writes, so only process 0 locks.
"""
import contextlib
import dataclasses
import fcntl
import json
import os
import socket
import time
from typing import Any

import jax
from absl import logging

from mnist_jax.store import checkpoint, selection, writers
from mnist_jax.errors import UserError

LOCK = '.lock'
HORIZON_SCHEDULES = ('cosine', 'warmup_cosine', 'onecycle')  # η_t depends on num_epochs


class WorkdirBusy(UserError):
  """Another process is training in the workdir."""


def prepare(workdir: str) -> None:
  """Creates ``workdir`` and checks that it is writable, before any work."""
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, f'.write_test.{jax.process_index()}')  # one per host
    with open(probe, 'w') as f:
      f.write('ok')
    os.remove(probe)
  except OSError as e:
    raise UserError(f'cannot write to workdir {workdir} ({e.strerror}); '
                    'pass a writable --workdir') from None


@contextlib.contextmanager
def lock(workdir: str):
  """Holds ``workdir``'s lock for the block; WorkdirBusy if another process has it."""
  if jax.process_index() != 0:
    yield
    return
  path = os.path.join(workdir, LOCK)
  f = open(path, 'a+')
  try:
    try:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
      f.seek(0)
      holder = f.read().strip() or 'another process'
      raise WorkdirBusy(f'workdir {workdir} is in use by {holder}; wait for it to '
                        'finish (or stop it) or pass another --workdir') from None
    yield
  finally:
    f.close()  # releases the lock


def claim(workdir: str) -> None:
  """Writes the holder (pid, host, start time) into the lock file this process holds."""
  if jax.process_index() != 0:
    return
  with open(os.path.join(workdir, LOCK), 'w') as f:
    f.write(f'pid {os.getpid()} on {socket.gethostname()} since '
            f'{time.strftime("%Y-%m-%d %H:%M:%S")}\n')


def read_config_json(workdir: str) -> dict:
  """The contents of ``workdir/config.json``; UserError naming it when it is
  missing or not JSON."""
  path = os.path.join(workdir, 'config.json')
  if not os.path.isfile(path):
    raise UserError(f'{path} not found: {workdir} is not a training run directory; '
                    'pass the --workdir a run of python -m mnist_jax.main wrote')
  try:
    with open(path) as f:
      saved = json.load(f)
  except (OSError, ValueError) as e:
    raise UserError(f'cannot read {path} ({e}); it is damaged: restore that file '
                    'or train again in a new --workdir') from None
  if not isinstance(saved, dict):
    raise UserError(f'{path} holds no config (a JSON {type(saved).__name__}); it is '
                    'damaged: restore that file or train again in a new --workdir')
  return saved


def load_history(workdir: str) -> list:
  """The epoch records of ``workdir/metrics.jsonl`` ([] if there are none yet);
  UserError naming the file and line of a record that is not a JSON object with
  an 'epoch' (a cut or damaged file: the trainer writes it whole, atomically)."""
  path = os.path.join(workdir, 'metrics.jsonl')
  if not os.path.exists(path):
    return []
  records = []
  with open(path) as f:
    for n, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        record = json.loads(line)
      except ValueError:
        record = None
      if not isinstance(record, dict) or not isinstance(record.get('epoch'), int):
        raise UserError(f'{path} line {n} is not an epoch record (the file is cut or '
                        'damaged); restore the file, or delete it to resume (the '
                        'checkpoints hold the history up to their epoch)')
      records.append(record)
  return records


def check_resume(config, workdir: str) -> None:
  """Refuses, reading only, a resume whose run files are damaged or whose config
  differs from the recorded one (num_epochs may change only where the
  learning-rate schedule does not depend on it)."""
  load_history(workdir)   # one error line for a damaged metrics.jsonl
  if not os.path.exists(os.path.join(workdir, 'config.json')):
    return
  saved = read_config_json(workdir)
  current = json.loads(config.to_json_best_effort())
  changed = sorted(k for k in set(saved) | set(current)
                   if k != 'num_epochs' and saved.get(k) != current.get(k))
  if changed:
    raise UserError(f'workdir {workdir} holds a run with a different config '
                    f'({", ".join(changed)} differ); use a new --workdir to start '
                    'a new run (only num_epochs may change when resuming)')
  if (saved.get('num_epochs') != current['num_epochs']
      and current['schedule'] in HORIZON_SCHEDULES):
    raise UserError(
        f"workdir {workdir} was started with num_epochs={saved.get('num_epochs')} and "
        f"its '{current['schedule']}' learning-rate schedule spans those epochs; "
        f"resuming with num_epochs={current['num_epochs']} would change η mid-run: "
        f"resume with --config.num_epochs={saved.get('num_epochs')} or use a new --workdir")


def record_config(config, workdir: str) -> None:
  """Writes ``workdir/config.json`` (after ``check_resume`` where the run resumes)."""
  writers.write_json_atomic(os.path.join(workdir, 'config.json'),
                            json.loads(config.to_json_best_effort()))


@dataclasses.dataclass
class RunFiles:
  """One run's files while it trains: its checkpoints, epoch records and metrics writer."""
  config: Any
  workdir: str
  ckpt: checkpoint.RunCheckpoints
  epoch: int = 0                 # the last finished epoch
  history: list = dataclasses.field(default_factory=list)
  writer: Any = None
  settle: Any = None             # e*'s resumed state, while later 'best' checkpoints wait

  @classmethod
  def open(cls, config, workdir: str) -> 'RunFiles':
    """The run's files, with a resume's checks done (reads only)."""
    ckpt = checkpoint.RunCheckpoints(os.path.join(workdir, 'checkpoints'),
                                     config.keep_checkpoints)
    if ckpt.steps('latest'):
      check_resume(config, workdir)
    return cls(config, workdir, ckpt)

  def resume(self, template) -> tuple:
    """(state, e*'s state or None): 'latest' restored into ``template`` (a fresh
    run: ``template``, None). Reads only, but for a damaged checkpoint moved aside
    (logged); e*'s weights come from 'best', else from 'latest'."""
    state, meta = self.ckpt.resume(template)
    if meta is None:
      return template, None
    self.epoch, self.history = meta['epoch'], list(meta['history'])
    best = selection.best(self.history, self.config.model_weights)
    if best is None:
      return state, None
    at_best = state if best['epoch'] == self.epoch else _restore_epoch(self.ckpt, state,
                                                                        best['epoch'])
    if any(s > best['epoch'] for s in self.ckpt.steps('best')):
      self.settle = at_best   # best checkpoints the interrupted run saved after e*
    return state, at_best

  def begin(self) -> None:
    """Decided: from here on, files change (lock holder, config.json, metrics.jsonl)."""
    claim(self.workdir)
    record_config(self.config, self.workdir)
    self.writer = writers.MetricWriter(self.workdir, json.loads(self.config.to_json_best_effort()),
                                       self.history)

  def record(self, record: dict, state, *, improved: bool, stop: bool = False,
             label: str = '') -> None:
    """Adds an epoch: metrics.jsonl and TensorBoard, 'latest' every
    config.checkpoint_every_epochs, at the end and at a ``stop``, and 'best' when
    the epoch ``improved`` e* (store/selection.py)."""
    config, epoch = self.config, record['epoch']
    self.history.append(record)
    self.epoch = epoch
    final = stop or epoch == config.num_epochs
    every = config.checkpoint_every_epochs
    meta = {'epoch': epoch, 'history': self.history}
    if final or (every and epoch % every == 0):
      checkpoint.save(self.ckpt.get('latest'), epoch, state, meta)
    if improved:
      self.ckpt.save_best(epoch, state, self._best_meta(record))
      self.settle = None
    elif self.settle is not None:
      self._settle_best(epoch, final)
    self.writer.write_epoch(record)
    val = f" | val {record['val_accuracy']:.4f}" if 'val_accuracy' in record else ''
    test = (f" | test loss {record['test_loss']:.4f} acc {record['test_accuracy']:.4f}"
            if 'test_accuracy' in record else '')
    logging.info('epoch %d/%d%s: train loss %.4f acc %.4f%s%s | %.0f img/s', epoch,
                 config.num_epochs, label, record['train_loss'], record['train_accuracy'],
                 val, test, record['images_per_s'])

  def _best_meta(self, record) -> dict:
    """The record saved with the best checkpoint of ``record``'s epoch."""
    weights = self.config.model_weights
    return {'epoch': record['epoch'],
            'history': self.history[:self.history.index(record) + 1],
            'val_accuracy': selection.score(record, weights),
            'selected_by': selection.key(weights)}

  def _settle_best(self, epoch: int, final: bool) -> None:
    """A resumed run whose e* is still the one it resumed with: best checkpoints the
    interrupted run saved of epochs now replayed (or, at its end, of any later
    epoch) give way to e*'s state."""
    best = selection.best(self.history, self.config.model_weights)
    stale = [s for s in self.ckpt.steps('best')
             if best is not None and s != best['epoch'] and (s <= epoch or final)]
    if stale:
      self.ckpt.save_best(best['epoch'], self.settle, self._best_meta(best))
      self.settle = None

  def write_summary(self, summary: dict) -> None:
    writers.write_json_atomic(os.path.join(self.workdir, 'summary.json'), summary)

  def close(self) -> None:
    self.ckpt.wait_until_finished()
    if self.writer is not None:
      self.writer.close()


def _restore_epoch(ckpt, state, epoch):
  """The run's state at ``epoch`` from its 'best' checkpoint, else (absent or
  unreadable there) from its 'latest'."""
  why = []
  for which in ('best', 'latest'):
    if epoch in ckpt.steps(which):
      try:
        return ckpt.restore(which, state, epoch)[0]
      except UserError as e:
        why.append(str(e).split(';')[0])
  raise UserError(f'the weights of epoch {epoch}, the best by validation so far, are in '
                  f'no intact checkpoint under {ckpt.directory} (best {ckpt.steps("best")}, '
                  f'latest {ckpt.steps("latest")}{": " + ", ".join(why) if why else ""}); '
                  'this run cannot resume: start it again in a new --workdir')
