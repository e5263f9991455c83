"""The run directory: made writable, held by one process, its config recorded.

  prepare(workdir)          creates it and checks that it is writable, before any work
  lock(workdir)             an exclusive lock held while a process trains in it
  check_resume(...)         refuses a resume that would change the run or that finds a
                            damaged config.json or metrics.jsonl (reads only)
  claim(workdir)            names the holder in the lock file, once the checks passed
  record_config(...)        writes config.json

The lock is ``fcntl.flock`` on ``workdir/.lock`` (on Linux's NFS client it
becomes a POSIX byte-range lock, so it also holds on a shared filesystem);
the kernel drops it when the holder exits, even on SIGKILL, so there is no
stale lock to clean up. The file names its holder (host, pid, start time),
written by ``claim`` once every check of a resume has passed: a refused
command leaves even the lock file as it found it. In a multi-host run only
process 0 writes, so only process 0 locks.
"""
import contextlib
import fcntl
import json
import os
import socket
import time

import jax

from mnist_jax.engine import rundir, writers
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


def check_resume(config, workdir: str) -> None:
  """Refuses, reading only, a resume whose run files are damaged or whose config
  differs from the recorded one (num_epochs may change only where the
  learning-rate schedule does not depend on it)."""
  rundir.load_history(workdir)   # one error line for a damaged metrics.jsonl
  if not os.path.exists(os.path.join(workdir, 'config.json')):
    return
  saved = rundir.read_config_json(workdir)
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
