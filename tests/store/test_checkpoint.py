"""Checkpoints: an intact one reads back as written; a damaged one is detected, named and set aside.

Damage is done the way a bad disk does it: bytes flipped in the middle of the
largest array-data file of the checkpoint (orbax writes the arrays as OCDBT
data files under <dir>/<epoch>/state/ocdbt.process_0/d/).
"""
import glob
import logging
import os
import subprocess
import sys
import typing

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from mnist_jax.store import checkpoint
from mnist_jax.errors import UserError


class State(flax.struct.PyTreeNode):
  """The four fields ``checkpoint`` saves, like a TrainState."""
  step: jax.Array
  params: dict
  batch_stats: dict
  opt_state: tuple


def _state(seed: int, fill=None) -> State:
  """A small state of random (incompressible) arrays; ``fill`` overwrites params."""
  r = np.random.default_rng(seed)
  w = r.normal(size=(64, 100)).astype(np.float32)
  if fill is not None:
    w[:] = fill
  return State(step=jnp.array(seed, jnp.int32),
               params={'dense': {'kernel': jnp.asarray(w), 'bias': jnp.ones(100)}},
               batch_stats={'mean': jnp.asarray(r.normal(size=(100,)), jnp.float32)},
               opt_state=(jnp.zeros(100), {'count': jnp.array(7, jnp.int32)}))


def _save(directory, epochs, state_fn=_state):
  """Saves ``state_fn(e)`` at each epoch e (waits, closes); returns {e: state}."""
  mngr = checkpoint.manager(directory, keep=5)
  states = {}
  for e in epochs:
    states[e] = state_fn(e)
    checkpoint.save(mngr, e, states[e], {'epoch': e})
  mngr.wait_until_finished()
  mngr.close()
  return states


def _flip(directory, epoch):
  """Inverts 16 bytes in the middle of the epoch's largest array-data file."""
  files = glob.glob(os.path.join(str(directory), str(epoch), 'state', '**', 'd', '*'),
                    recursive=True)
  path = max(files, key=os.path.getsize)
  data = bytearray(open(path, 'rb').read())
  mid = len(data) // 2
  data[mid:mid + 16] = bytes(b ^ 0xFF for b in data[mid:mid + 16])
  with open(path, 'wb') as f:
    f.write(data)


def _equal(a, b) -> bool:
  return jax.tree_util.tree_all(jax.tree_util.tree_map(
      lambda x, y: np.array_equal(np.asarray(x), np.asarray(y)), a, b))


@pytest.fixture
def ckpt_dir(tmp_path):
  return str(tmp_path / 'checkpoints' / 'latest')


def test_intact_checkpoint_round_trips_exactly(ckpt_dir):
  states = _save(ckpt_dir, [1, 2])
  mngr = checkpoint.manager(ckpt_dir)
  state, meta = checkpoint.restore(mngr, _state(99), fallback=True)
  assert meta['epoch'] == 2 and 'sha256' in meta
  assert _equal(state, states[2])
  state, meta = checkpoint.restore(mngr, _state(99), 1)
  assert meta['epoch'] == 1 and _equal(state, states[1])
  # no checkpoint: the template comes back
  empty_state, empty_meta = checkpoint.restore(checkpoint.manager(ckpt_dir + '-e'), _state(5))
  assert empty_meta is None and _equal(empty_state, _state(5))


def test_a_fresh_run_touches_no_orbax_until_its_first_save(tmp_path):
  """Start-up: the engine's modules import without orbax (0.3-0.4 s), and a run
  with nothing to resume makes no manager and no directory before it saves."""
  code = ('import sys; from mnist_jax.engine import evaluation, rundir, trainer; '
          'print(sorted(m for m in sys.modules if m.startswith(("orbax", "tensorstore"))))')
  out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True)
  assert out.stdout.strip() == '[]', out.stdout
  directory = str(tmp_path / 'checkpoints')
  run, template = checkpoint.RunCheckpoints(directory, keep=2), _state(5)
  state, meta = run.resume(template)
  assert state is template and meta is None
  assert run.made == {} and not os.path.exists(directory)
  checkpoint.save(run.get('latest'), 3, _state(3), {'epoch': 3})
  run.wait_until_finished()
  assert sorted(run.made) == ['latest']
  state, meta = checkpoint.RunCheckpoints(directory, keep=2).resume(_state(99))
  assert meta['epoch'] == 3 and _equal(state, _state(3))


def test_damaged_latest_is_never_restored_silently(ckpt_dir):
  """The bug: flipped bytes in the latest checkpoint came back as the state."""
  states = _save(ckpt_dir, [1, 2])
  _flip(ckpt_dir, 2)
  try:
    state, meta = checkpoint.restore(checkpoint.manager(ckpt_dir), _state(99))
  except UserError:
    return
  assert meta['epoch'] == 1 and _equal(state, states[1])


def test_fallback_restores_previous_and_sets_damaged_aside(ckpt_dir, tmp_path, caplog):
  states = _save(ckpt_dir, [1, 2])
  _flip(ckpt_dir, 2)
  mngr = checkpoint.manager(ckpt_dir)
  with caplog.at_level(logging.WARNING):
    state, meta = checkpoint.restore(mngr, _state(99), fallback=True)
  assert meta['epoch'] == 1 and _equal(state, states[1])
  bad = os.path.join(ckpt_dir, '2')
  assert any(bad in r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)
  moved = tmp_path / 'checkpoints' / 'damaged' / 'latest-2'
  assert moved.is_dir() and (moved / 'state').is_dir()  # moved, not deleted
  assert not os.path.exists(bad) and mngr.all_steps() == [1]
  new = _state(22)
  checkpoint.save(mngr, 2, new, {'epoch': 2})  # the epoch can be trained and saved again
  mngr.wait_until_finished()
  state, meta = checkpoint.restore(mngr, _state(99), fallback=True)
  assert meta['epoch'] == 2 and _equal(state, new)


def test_damaged_specific_checkpoint_raises_naming_it(ckpt_dir):
  _save(ckpt_dir, [1, 2])
  _flip(ckpt_dir, 1)
  mngr = checkpoint.manager(ckpt_dir)
  with pytest.raises(UserError, match=os.path.join(ckpt_dir, '1')) as e:
    checkpoint.restore(mngr, _state(99), 1)
  assert '--which=' in str(e.value) and '\n' not in str(e.value)
  assert os.path.isdir(os.path.join(ckpt_dir, '1'))  # evaluation moves nothing
  assert mngr.all_steps() == [1, 2]


def test_all_checkpoints_damaged_raises(ckpt_dir, tmp_path):
  _save(ckpt_dir, [1, 2])
  _flip(ckpt_dir, 1)
  _flip(ckpt_dir, 2)
  with pytest.raises(UserError, match='--workdir') as e:
    checkpoint.restore(checkpoint.manager(ckpt_dir), _state(99), fallback=True)
  assert os.path.join(ckpt_dir, '1') in str(e.value)
  assert os.path.join(ckpt_dir, '2') in str(e.value)
  assert sorted(os.listdir(tmp_path / 'checkpoints' / 'damaged')) == ['latest-1', 'latest-2']


def test_non_finite_checkpoint_is_rejected(ckpt_dir, tmp_path):
  _save(ckpt_dir, [1])
  _save(ckpt_dir, [2], lambda e: _state(e, fill=np.nan))
  with pytest.raises(UserError, match='non-finite'):
    checkpoint.restore(checkpoint.manager(ckpt_dir), _state(99), 2)
  state, meta = checkpoint.restore(checkpoint.manager(ckpt_dir), _state(99), fallback=True)
  assert meta['epoch'] == 1
  assert (tmp_path / 'checkpoints' / 'damaged' / 'latest-2').is_dir()


def test_checkpoint_without_checksum_is_accepted_if_finite(ckpt_dir):
  """Checkpoints of older versions have no checksum in their meta."""
  mngr = checkpoint.manager(ckpt_dir)
  for e, fill in [(1, None), (2, np.inf)]:
    mngr.save(e, args=ocp.args.Composite(
        state=ocp.args.StandardSave(checkpoint._arrays(_state(e, fill))),  # pylint: disable=protected-access
        meta=ocp.args.JsonSave({'epoch': e})))
  mngr.wait_until_finished()
  state, meta = checkpoint.restore(mngr, _state(99), 1)
  assert meta == {'epoch': 1} and _equal(state, _state(1))
  with pytest.raises(UserError, match='non-finite'):
    checkpoint.restore(mngr, _state(99), 2)


def test_other_model_is_not_called_damaged(ckpt_dir):
  _save(ckpt_dir, [1])
  other = _state(3).replace(params={'dense': {'kernel': jnp.zeros((3, 3))}})
  with pytest.raises(UserError, match='different model/config'):
    checkpoint.restore(checkpoint.manager(ckpt_dir), other, fallback=True)
  assert os.path.isdir(os.path.join(ckpt_dir, '1'))


# --- every save happens or says why not ---------------------------------------------

def test_a_save_orbax_skips_says_why(tmp_path, caplog):
  """orbax skips a step at or below its latest and only returns False: the save
  names the checkpoint that was not written and the reason, in one line."""
  directory = str(tmp_path / 'checkpoints' / 'best')
  mngr = checkpoint.manager(directory, keep=1, best=True)
  assert checkpoint.save(mngr, 7, _state(7), {'epoch': 7, 'val_accuracy': 0.9})
  mngr.wait_until_finished()
  with caplog.at_level(logging.WARNING):
    saved = checkpoint.save(mngr, 6, _state(6), {'epoch': 6, 'val_accuracy': 0.8})
  mngr.wait_until_finished()
  assert saved is False and sorted(mngr.all_steps()) == [7]
  lines = [r.getMessage() for r in caplog.records if 'not saved' in r.getMessage()]
  assert len(lines) == 1 and 'epoch 6' in lines[0] and '7' in lines[0], lines


def test_resume_from_an_older_latest_saves_the_replayed_best(tmp_path, caplog):
  """'latest' every 5 epochs, 'best' at 7, killed at 8: the resumed run starts from
  latest 5 and replays 6, 7, ...; best/7 stays on disk until the replay's best
  of 6 is saved, which then replaces it (orbax alone would skip it: 6 <= 7)."""
  directory = str(tmp_path / 'checkpoints')
  run = checkpoint.RunCheckpoints(directory, keep=2)
  checkpoint.save(run.get('latest'), 5, _state(5), {'epoch': 5, 'history': []})
  checkpoint.save(run.get('best'), 7, _state(7), {'epoch': 7, 'val_accuracy': 0.95})
  run.wait_until_finished()
  resumed = checkpoint.RunCheckpoints(directory, keep=2)
  state, meta = resumed.resume(_state(99))
  assert meta['epoch'] == 5 and _equal(state, _state(5))
  assert resumed.steps('best') == [7]                 # kept until replaced
  with caplog.at_level(logging.WARNING):
    assert resumed.save_best(6, _state(6), {'epoch': 6, 'val_accuracy': 0.9})
  resumed.wait_until_finished()
  assert resumed.steps('best') == [6] and sorted(resumed.get('best').all_steps()) == [6]
  assert not os.path.exists(os.path.join(directory, 'best.new'))
  assert not [r for r in caplog.records if 'not saved' in r.getMessage()]
  mngr = checkpoint.reader(os.path.join(directory, 'best'), best=True)
  assert checkpoint.best_epoch(mngr) == 6
  best, best_meta = checkpoint.restore(mngr, _state(99))
  assert best_meta['epoch'] == 6 and _equal(best, _state(6))
  # the next improvement of the replay is a plain save ranked with it
  assert resumed.save_best(8, _state(8), {'epoch': 8, 'val_accuracy': 0.97})
  resumed.wait_until_finished()
  assert resumed.steps('best') == [8]


def test_resume_reads_only(tmp_path):
  """Resuming restores through a read-only manager: an unfinished save's temporary
  directory, which a writing manager would clean up, is left as it is."""
  directory = str(tmp_path / 'checkpoints')
  _save(os.path.join(directory, 'latest'), [1])
  tmp = os.path.join(directory, 'latest', '2.orbax-checkpoint-tmp-123')
  os.makedirs(tmp)
  state, meta = checkpoint.RunCheckpoints(directory, keep=2).resume(_state(99))
  assert meta['epoch'] == 1 and _equal(state, _state(1))
  assert os.path.isdir(tmp)


def test_the_reports_of_abandoned_reads_are_dropped_and_counted():
  """What orbax's abandoned concurrent reads report when they are collected, on
  the closed event loop or as a read coroutine that raised when closed, is
  dropped (and counted, so the mute waits for them to stop); anything else
  reaches the previous hook."""
  class Report(typing.NamedTuple):
    exc_value: BaseException
    object: object

  async def _read_array_index_and_device_put():
    pass

  passed = []
  drop = checkpoint._Abandoned(passed.append)   # pylint: disable=protected-access
  read = _read_array_index_and_device_put()
  drop(Report(RuntimeError('Event loop is closed'), None))
  drop(Report(Exception('Encountered error while reading array index: ().'), read))
  other = Report(ValueError('something else'), read)
  drop(other)
  drop(Report(RuntimeError('another error'), None))
  read.close()
  assert drop.count == 2
  assert [r.exc_value.args[0] for r in passed] == ['something else', 'another error']


def test_a_checkpoint_damaged_throughout_is_named_without_noise(tmp_path):
  """Every file of a checkpoint cut in half: one error naming it, and no stray
  'Event loop is closed' reports from orbax's abandoned concurrent reads."""
  directory = str(tmp_path / 'latest')
  _save(directory, [1])
  for path in glob.glob(os.path.join(directory, '1', 'state', '**', 'd', '*'),
                        recursive=True):
    os.truncate(path, os.path.getsize(path) // 2)
  code = ('import jax, sys\n'
          'sys.path.insert(0, %r)\n'
          'import test_checkpoint as t\n'
          'from mnist_jax.store import checkpoint\n'
          'from mnist_jax.errors import UserError\n'
          'try:\n'
          '  checkpoint.restore(checkpoint.reader(%r), t._state(9))\n'
          'except UserError as e:\n'
          '  print("error:", e)\n') % (os.path.dirname(__file__), directory)
  out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                       timeout=300, cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
  assert 'is damaged' in out.stdout, out.stdout + out.stderr[-2000:]
  assert 'Traceback' not in out.stderr and 'Event loop is closed' not in out.stderr, \
      out.stderr[-2000:]
  assert 'never retrieved' not in out.stderr, out.stderr[-2000:]


def test_a_run_resumed_from_an_older_latest_keeps_best_in_its_history(tmp_path,
                                                                       small_config):
  """A run killed after saving 'best' of epoch 4 but before its 'latest' 4 resumes
  from latest 2; continued to 3 epochs, its best checkpoint is an epoch of its
  own history (summary.json's best_epoch), not the dropped epoch 4."""
  from mnist_jax.engine import rundir, trainer  # pylint: disable=g-import-not-at-top
  import shutil  # pylint: disable=g-import-not-at-top
  small_config.data.train_limit = 300
  small_config.num_epochs, small_config.checkpoint_every_epochs = 4, 2
  workdir = str(tmp_path / 'run')
  trainer.train_and_evaluate(small_config, workdir)
  best_dir = os.path.join(workdir, 'checkpoints', 'best')
  assert os.listdir(best_dir) == ['4'], os.listdir(best_dir)   # the case under test
  shutil.rmtree(os.path.join(workdir, 'checkpoints', 'latest', '4'))
  small_config.num_epochs = 3
  summary = trainer.train_and_evaluate(small_config, workdir).summary
  assert summary['epochs'] == 3
  _, _, meta = rundir.load_run(workdir, 'best')
  assert meta['epoch'] == summary['best_epoch'] <= 3
