"""Checkpoints with orbax-checkpoint: save every N epochs, resume from the latest.

Why orbax: it writes each checkpoint into a temporary directory and renames it
only when complete (atomic commit), so a run killed mid-save never leaves a
half-written checkpoint that a restart would trust; it is multi-host safe and
saves in the background while the next epoch trains.

Saved per epoch: the train state's arrays (step, params, batch_stats,
opt_state) and a small JSON record (epoch, metrics). Random keys are not saved:
epoch e's randomness is fold_in(key(seed), e), so a resumed run is identical.
"""
import os

import orbax.checkpoint as ocp

from mnist_jax.errors import UserError


def _arrays(state):
  return {'step': state.step, 'params': state.params,
          'batch_stats': state.batch_stats, 'opt_state': state.opt_state}


def manager(directory: str, keep: int = 2, *, best: bool = False) -> ocp.CheckpointManager:
  """A manager keeping the last ``keep`` checkpoints (or the best by val accuracy)."""
  options = ocp.CheckpointManagerOptions(
      max_to_keep=keep, create=True, cleanup_tmp_directories=True,
      # distinct multi-host barrier names, so 'latest' and 'best' can save the same epoch
      multiprocessing_options=ocp.options.MultiprocessingOptions(
          barrier_sync_key_prefix='best' if best else 'latest'),
      best_fn=(lambda m: m['val_accuracy']) if best else None, best_mode='max')
  return ocp.CheckpointManager(os.path.abspath(directory), options=options,
                               item_names=('state', 'meta'))


def save(mngr: ocp.CheckpointManager, epoch: int, state, meta: dict) -> None:
  """Saves the state at ``epoch`` (asynchronously; see ``wait``)."""
  metrics = {'val_accuracy': float(meta['val_accuracy'])} if 'val_accuracy' in meta else None
  mngr.save(epoch, args=ocp.args.Composite(
      state=ocp.args.StandardSave(_arrays(state)), meta=ocp.args.JsonSave(meta)),
      metrics=metrics)


def restore(mngr: ocp.CheckpointManager, state, epoch=None):
  """(state, meta) from checkpoint ``epoch`` (latest if None), or (state, None)
  when there is none. ``state`` is the template: a freshly created TrainState."""
  epoch = mngr.latest_step() if epoch is None else epoch
  if epoch is None:
    return state, None
  try:
    out = mngr.restore(epoch, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(_arrays(state)), meta=ocp.args.JsonRestore()))
  except Exception as e:  # orbax raises many types for unreadable/mismatched trees
    raise UserError(
        f'cannot restore checkpoint {epoch} in {mngr.directory} ({type(e).__name__}: '
        f'{str(e).splitlines()[0][:200]}); it was written by a different model/config '
        'or is damaged: use a new --workdir or delete that checkpoint') from None
  return state.replace(**out['state']), dict(out['meta'])


def best_epoch(mngr: ocp.CheckpointManager):
  """The epoch of the best checkpoint (by val accuracy) in a best-manager."""
  return mngr.best_step()
