"""Checkpoints with orbax-checkpoint: save every N epochs, resume from the latest.

Why orbax: it writes each checkpoint into a temporary directory and renames it
only when complete (atomic commit), so a run killed mid-save never leaves a
half-written checkpoint that a restart would trust; it is multi-host safe and
saves in the background while the next epoch trains. ``save`` returns once the
arrays are copied to the host; call the manager's ``wait_until_finished()``
before reading the checkpoint back or exiting.

Saved per epoch: the train state's arrays (step, params, batch_stats,
opt_state, and the weight EMA 'ema' when config.ema_decay > 0) and a small JSON record (epoch, metrics, 'sha256'). Random keys are
not saved: epoch e's randomness is fold_in(key(seed), e), so a resumed run is
identical.

Imported on first use: orbax (with tensorstore, rich, uvloop, ...) is slow to
import, so a fresh run (``RunCheckpoints``) imports it at its first save, after
its first train step, not in its start-up.

Integrity: 'sha256' is a checksum of the saved arrays (dtype, shape and bytes
of every leaf, in tree order). ``restore`` recomputes it and rejects non-finite
floats, so flipped bytes on disk are caught instead of training on garbage. A
record without 'sha256' (arrays sharded over hosts: no host holds them all) is
accepted if finite. When resuming (``fallback=True``) a damaged
checkpoint is moved to ``<directory>/../damaged/<name>-<epoch>`` (nothing is
deleted) and the next older one is restored; otherwise UserError names it.
"""
from __future__ import annotations

import contextlib
import dataclasses
import gc
import hashlib
import inspect
import logging as logging_std
import os
import shutil
import sys
import time
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from mnist_jax.store import selection
from mnist_jax.errors import UserError

if TYPE_CHECKING:
  import orbax.checkpoint as ocp


def _ocp():
  """orbax.checkpoint, imported here on first use (see the module docstring)."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  return ocp


class _Damaged(Exception):
  """A checkpoint that cannot be read or whose arrays are not the ones saved."""


def _arrays(state):
  arrays = {'step': state.step, 'params': state.params,
            'batch_stats': state.batch_stats, 'opt_state': state.opt_state}
  if getattr(state, 'ema', None):   # the weight EMA (config.ema_decay > 0), beside the raw
    arrays['ema'] = state.ema
  return arrays


def _name(path) -> str:
  """'opt_state.1.0.mu' for a key path: orbax's own naming of a saved leaf."""
  return '.'.join(str(getattr(k, 'key', getattr(k, 'idx', getattr(k, 'name', k))))
                  for k in path)


def _local(x):
  """``x``, or this host's copy of an array replicated over hosts; None for one
  sharded over hosts (no complete copy here)."""
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    return x.addressable_data(0) if x.is_fully_replicated else None
  return x


def _host_leaves(arrays) -> dict:
  """{leaf name: numpy copy (or None, see ``_local``)} in tree order, in one transfer."""
  named = jax.tree_util.tree_flatten_with_path(arrays)[0]
  copies = jax.device_get([_local(x) for _, x in named])
  return {_name(p): None if c is None else np.asarray(c) for (p, _), c in zip(named, copies)}


def _sha256(leaves: dict):
  """Hex sha256 over every leaf's dtype, shape and bytes in order (None if a leaf
  has no copy on this host)."""
  h = hashlib.sha256()
  for a in leaves.values():
    if a is None:
      return None
    h.update(f'{a.dtype}{a.shape};'.encode())
    h.update(np.ascontiguousarray(a).reshape(-1).view(np.uint8))
  return h.hexdigest()


def _non_finite(leaves: dict):
  """The name of the first float leaf holding a NaN/inf, or None."""
  for name, a in leaves.items():
    if a is not None and jnp.issubdtype(a.dtype, jnp.inexact) and not np.isfinite(a).all():
      return name
  return None


def _signatures(tree) -> dict:
  """{leaf name: 'float32[64, 10]'} of arrays or of orbax's ArrayMetadata."""
  return {_name(p): f'{np.dtype(x.dtype)}{list(x.shape)}'
          for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _step_dir(mngr, epoch) -> str:
  return os.path.join(str(mngr.directory), str(epoch))


def _open(directory: str, best: bool, **options) -> ocp.CheckpointManager:
  """A manager of <directory>/<epoch>/{state,meta}; ``best``: ranked by val accuracy."""
  ocp = _ocp()
  options = ocp.CheckpointManagerOptions(
      best_fn=selection.score if best else None, best_mode='max', **options)
  return ocp.CheckpointManager(os.path.abspath(directory), options=options,
                               item_names=('state', 'meta'))


def manager(directory: str, keep: int = 2, *, best: bool = False) -> ocp.CheckpointManager:
  """A manager keeping the last ``keep`` checkpoints (or the best by val accuracy)."""
  return _open(directory, best, max_to_keep=keep, create=True, cleanup_tmp_directories=True,
               # distinct multi-host barrier names, so 'latest' and 'best' can save the same epoch
               multiprocessing_options=_ocp().options.MultiprocessingOptions(
                   barrier_sync_key_prefix='best' if best else 'latest'))


def reader(directory: str, *, best: bool = False) -> ocp.CheckpointManager:
  """A read-only manager: it never deletes or cleans up anything, so reading an
  ongoing run leaves the trainer's in-progress (temporary) checkpoint alone."""
  return _open(directory, best, read_only=True, create=False, cleanup_tmp_directories=False)


@dataclasses.dataclass
class RunCheckpoints:
  """A training run's two managers, <directory>/latest (the last ``keep``) and
  <directory>/best (by val accuracy), each made on first use: a fresh run makes
  them, and imports orbax, at its first save. Reading for a resume goes through
  read-only managers (``reader``), which change nothing on disk."""
  directory: str            # <workdir>/checkpoints
  keep: int
  made: dict = dataclasses.field(default_factory=dict)

  def get(self, which: str) -> ocp.CheckpointManager:
    if which not in self.made:
      self.made[which] = manager(os.path.join(self.directory, which),
                                 self.keep if which == 'latest' else 1, best=which == 'best')
    return self.made[which]

  def steps(self, which: str) -> list:
    """The epochs whose checkpoint <directory>/<which> holds (committed ones)."""
    path = os.path.join(self.directory, which)
    return sorted(int(s) for s in os.listdir(path) if s.isdigit()) \
        if os.path.isdir(path) else []

  def resume(self, state):
    """``restore(latest, state, fallback=True)`` through a read-only manager; (state,
    None) without touching orbax when <directory>/latest holds no checkpoint.
    A damaged checkpoint is moved aside (logged); nothing else changes on disk."""
    if not self.steps('latest'):
      return state, None
    return self.restore('latest', state, fallback=True)

  def restore(self, which: str, state, epoch=None, *, fallback: bool = False):
    """``restore`` of <directory>/<which> through a read-only manager."""
    mngr = reader(os.path.join(self.directory, which), best=which == 'best')
    try:
      return restore(mngr, state, epoch, fallback=fallback)
    finally:
      mngr.close()

  def save_best(self, epoch: int, state, meta: dict) -> bool:
    """Saves ``state`` as the best checkpoint of ``epoch``.

    A resumed run replays epochs whose best checkpoint the interrupted run may
    have saved (orbax would skip a step at or below one it holds). Those are
    replaced only once this one is saved: it is written beside, in
    <directory>/best.new, then the later ones are deleted and it is moved in."""
    later = [s for s in self.steps('best') if s >= epoch]
    if not later:
      return save(self.get('best'), epoch, state, meta)
    side = os.path.join(self.directory, 'best.new')
    _remove(side)   # left by a crash in a replacement
    _sync(f'best-replace-{epoch}')
    new = manager(side, 1, best=True)
    try:
      saved = save(new, epoch, state, meta)
      new.wait_until_finished()
    finally:
      new.close()
    if not saved:
      _remove(side)
      return False
    best = self.get('best')
    best.wait_until_finished()
    for step in later:
      best.delete(step)
    if jax.process_index() == 0:
      os.rename(os.path.join(side, str(epoch)), os.path.join(self.directory, 'best', str(epoch)))
    _remove(side)
    _sync(f'best-replace-{epoch}-done')
    best.reload()
    logging.info('Best checkpoint of epoch %d saved in %s; it replaces those of the '
                 'epochs %s the interrupted run saved.', epoch, best.directory, later)
    return True

  def wait_until_finished(self) -> None:
    for mngr in self.made.values():
      mngr.wait_until_finished()


def save(mngr: ocp.CheckpointManager, epoch: int, state, meta: dict) -> bool:
  """Saves the state at ``epoch`` with ``meta`` plus the arrays' 'sha256';
  whether orbax saved it.

  Blocks while the arrays are copied to the host and hashed, then writes in the
  background: call ``mngr.wait_until_finished()`` before reading it back.
  orbax skips a step at or below the latest it holds (``should_save``) and only
  returns False: then one warning line names the checkpoint and why."""
  arrays = _arrays(state)
  digest = _sha256(_host_leaves(arrays))
  meta = {**meta, 'sha256': digest} if digest else dict(meta)
  metrics = {'val_accuracy': float(meta['val_accuracy'])} if 'val_accuracy' in meta else None
  ocp = _ocp()
  saved = mngr.save(epoch, args=ocp.args.Composite(
      state=ocp.args.StandardSave(arrays), meta=ocp.args.JsonSave(meta)),
      metrics=metrics)
  if not saved:
    latest = mngr.latest_step()
    why = (f'orbax skips steps at or below its latest, {latest}' if latest is not None
           and latest >= epoch else 'orbax declined it (read-only manager or a save in '
           'progress)')
    logging.warning('Checkpoint of epoch %d in %s was not saved: %s.', epoch,
                    mngr.directory, why)
  return bool(saved)


def _first_line(e) -> str:
  return (str(e).splitlines() or [''])[0][:200]


def _check_tree(mngr, epoch, template) -> None:
  """Raises UserError if checkpoint ``epoch`` holds other arrays than ``template``
  (another model/config); _Damaged if its metadata cannot be read."""
  ocp = _ocp()
  from etils import epath  # pylint: disable=g-import-not-at-top  (with orbax)
  try:
    # a bare handler: a manager without handlers (a read-only one) returns None here
    saved = ocp.StandardCheckpointHandler().metadata(
        epath.Path(_step_dir(mngr, epoch)) / 'state')
  except Exception as e:  # orbax raises many types for unreadable files
    raise _Damaged(f'unreadable metadata: {type(e).__name__}: {_first_line(e)}') from None
  if saved is None:
    return
  saved, wanted = _signatures(saved), _signatures(template)
  if saved != wanted:
    name = min(k for k in {**saved, **wanted} if saved.get(k) != wanted.get(k))
    raise UserError(
        f'cannot restore checkpoint {_step_dir(mngr, epoch)}: its array {name} is '
        f'{saved.get(name, "absent")} where the model has {wanted.get(name, "none")}; it was '
        'written by a different model/config: use a new --workdir or delete that checkpoint')


def _load(mngr, state, epoch):
  """(state, meta) of checkpoint ``epoch``; _Damaged if it is unreadable, its
  arrays differ from the saved 'sha256' or hold NaN/inf; UserError if it holds
  another model's arrays (its metadata is read first)."""
  template, ocp = _arrays(state), _ocp()
  with _abandoned_reads_muted():
    _check_tree(mngr, epoch, template)
    try:
      out = mngr.restore(epoch, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(template), meta=ocp.args.JsonRestore()))
    except Exception as e:  # orbax raises many types for unreadable trees
      raise _Damaged(f'unreadable: {type(e).__name__}: {_first_line(e)}') from None
  arrays, meta = out['state'], dict(out['meta'] or {})
  leaves = _host_leaves(arrays)
  if meta.get('sha256') and _sha256(leaves) not in (None, meta['sha256']):
    raise _Damaged("its arrays do not match the saved checksum 'sha256'")
  bad = _non_finite(leaves)
  if bad:
    raise _Damaged(f'non-finite values in {bad}')
  return state.replace(**arrays), meta


class _Abandoned:
  """Drops and counts what an abandoned read reports when it is collected: its
  completion on the closed event loop, or its read coroutine's failure (raised
  when the coroutine is closed); passes anything else to ``hook``."""

  def __init__(self, hook):
    self.hook, self.count = hook, 0

  def __call__(self, unraisable):
    value = unraisable.exc_value
    closed_loop = isinstance(value, RuntimeError) and 'Event loop is closed' in str(value)
    failed_read = (inspect.iscoroutine(unraisable.object)
                   and 'while reading array' in str(value))
    if closed_loop or failed_read:
      self.count += 1
    else:
      self.hook(unraisable)


@contextlib.contextmanager
def _abandoned_reads_muted():
  """Reads of a damaged checkpoint without orbax's stray noise on stderr.

  orbax reads a checkpoint's files concurrently under asyncio; when one read
  fails, the event loop closes while tensorstore still completes the others,
  and each completion reports 'Event loop is closed' (an unraisable exception)
  and 'Task exception was never retrieved' (the asyncio logger), and a read
  coroutine collected unfinished raises its failure when closed — dozens of
  tracebacks for one damaged file, which the one error line already names.
  Within the block those two are dropped; after a failure the block waits
  until the abandoned reads have stopped reporting, then restores both."""
  drop, logger = _Abandoned(sys.unraisablehook), logging_std.getLogger('asyncio')
  disabled = logger.disabled
  sys.unraisablehook, logger.disabled = drop, True
  try:
    yield
  except Exception:
    seen, deadline = -1, time.time() + 2.0
    while drop.count != seen and time.time() < deadline:
      seen = drop.count
      time.sleep(0.1)
      gc.collect()   # a failed task reports when it is collected
    raise
  finally:
    sys.unraisablehook, logger.disabled = drop.hook, disabled


def _remove(path: str) -> None:
  """Deletes the folder ``path`` (on process 0), if it is there."""
  if jax.process_index() == 0:
    shutil.rmtree(path, ignore_errors=True)


def _damaged_dir(mngr) -> str:
  return os.path.join(os.path.dirname(str(mngr.directory)), 'damaged')


def _set_aside(mngr, epoch) -> str:
  """Moves checkpoint ``epoch`` to <directory>/../damaged/<name>-<epoch> (a free
  name), makes ``mngr`` forget it and returns where it went."""
  base = os.path.join(_damaged_dir(mngr), f'{os.path.basename(str(mngr.directory))}-{epoch}')
  dest, n = base, 0
  while os.path.exists(dest):
    n += 1
    dest = f'{base}.{n}'
  _sync(f'checkpoint-set-aside-{epoch}')  # every host has chosen ``dest``
  if jax.process_index() == 0:
    try:
      os.makedirs(os.path.dirname(dest), exist_ok=True)
      os.rename(_step_dir(mngr, epoch), dest)
    except OSError as e:
      raise UserError(f'cannot move damaged checkpoint {_step_dir(mngr, epoch)} to {dest} '
                      f'({e.strerror}); delete or move it yourself, then resume') from None
  _sync(f'checkpoint-set-aside-{epoch}-done')
  mngr.reload()
  return dest


def _sync(name: str) -> None:
  """A barrier over all hosts (nothing on one host)."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


def restore(mngr: ocp.CheckpointManager, state, epoch=None, *, fallback: bool = False):
  """(state, meta) from checkpoint ``epoch`` (latest if None), or (state, None)
  when there is none. ``state`` is the template: a freshly created TrainState.

  A damaged checkpoint (unreadable, checksum mismatch, NaN/inf) raises UserError
  naming it, unless ``fallback``: then it is logged, moved to ../damaged/ and the
  next older checkpoint is tried; UserError if none is intact. Arrays that do not
  fit ``state`` (another model/config) raise UserError either way."""
  epoch = mngr.latest_step() if epoch is None else epoch
  if epoch is not None and epoch not in mngr.all_steps():
    raise UserError(f'no checkpoint {epoch} in {mngr.directory} (it has '
                    f'{sorted(mngr.all_steps())}); pass one of those')
  damaged = []
  while epoch is not None:
    try:
      return _load(mngr, state, epoch)
    except _Damaged as e:
      path = _step_dir(mngr, epoch)
      if not fallback:
        raise UserError(f'checkpoint {path} is damaged ({e}); load another one '
                        '(--which=latest or --which=best) or delete it') from None
      dest = _set_aside(mngr, epoch)
      logging.warning('Checkpoint %s is damaged (%s); moved it to %s, trying an older '
                      'one.', path, e, dest)
      damaged.append(path)
      epoch = max((s for s in mngr.all_steps() if s < epoch), default=None)
  if damaged:
    raise UserError(
        f'no intact checkpoint in {mngr.directory}: damaged {", ".join(damaged)} (moved '
        f'to {_damaged_dir(mngr)}); delete '
        f'{os.path.dirname(str(mngr.directory))} to train from scratch or use a new --workdir')
  return state, None


def best_epoch(mngr: ocp.CheckpointManager):
  """The epoch of the best checkpoint (by val accuracy) in a best-manager."""
  return mngr.best_step()
