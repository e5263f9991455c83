"""A resume decides before it acts: a refused or crashed resume leaves every file
of the run directory byte-identical (moving a damaged checkpoint aside is the one
allowed change, and it is logged), a damaged run file is one ``error:`` line that
names it and the fix, and the best checkpoint survives until the replay has
saved its own.

One run of 2 epochs is trained once (the module's fixture); each test works on a
copy of it, damages it as a disk or a crash does, and runs the real command."""
import glob
import hashlib
import json
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
pytestmark = pytest.mark.xdist_group('resume')


def _flags(data_dir, workdir, epochs=2):
  return ['--config=configs/mlp.py', '--config.write_plots=False',
          '--config.data.source=idx', f'--config.data.data_dir={data_dir}',
          '--config.data.val_size=500', '--config.data.train_limit=1500',
          f'--config.num_epochs={epochs}', '--config.batch_size=100',
          '--config.eval_batch_size=500', f'--workdir={workdir}']


def _main(args):
  return subprocess.run([sys.executable, '-m', 'mnist_jax.main', *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=600)


def snapshot(workdir) -> dict:
  """{relative path: sha256} of every file under ``workdir``."""
  out = {}
  for path in glob.glob(os.path.join(str(workdir), '**'), recursive=True):
    if os.path.isfile(path):
      with open(path, 'rb') as f:
        out[os.path.relpath(path, workdir)] = hashlib.sha256(f.read()).hexdigest()
  return out


def flip(path):
  """Inverts 16 bytes in the middle of ``path`` (as a bad disk does)."""
  data = bytearray(open(path, 'rb').read())
  mid = len(data) // 2
  data[mid:mid + 16] = bytes(b ^ 0xFF for b in data[mid:mid + 16])
  with open(path, 'wb') as f:
    f.write(data)


def damage_checkpoint(workdir, which, epoch):
  files = glob.glob(os.path.join(str(workdir), 'checkpoints', which, str(epoch), 'state',
                                 '**', 'd', '*'), recursive=True)
  flip(max(files, key=os.path.getsize))


def one_error_line(out, *words):
  assert out.returncode == 2, out.stderr[-3000:]
  assert 'Traceback' not in out.stderr, out.stderr[-3000:]
  assert 'Event loop is closed' not in out.stderr, out.stderr[-3000:]
  errors = [l for l in out.stderr.splitlines() if l.startswith('error:')]
  assert len(errors) == 1, out.stderr[-3000:]
  for w in words:
    assert w in errors[0], errors[0]
  return errors[0]


@pytest.fixture(scope='module')
def trained(tmp_path_factory, mnist_small_dir):
  """A finished 2-epoch MLP run (configs/mlp.py: a cosine schedule over its epochs) with best/2."""
  workdir = tmp_path_factory.mktemp('resume') / 'run'
  out = _main(_flags(mnist_small_dir, workdir))
  assert out.returncode == 0, out.stderr[-3000:]
  assert sorted(os.listdir(workdir / 'checkpoints' / 'best')) == ['2']
  return workdir


@pytest.fixture
def run(trained, tmp_path):
  """A copy of the trained run, its summary removed (as a run killed before its end)."""
  workdir = tmp_path / 'run'
  shutil.copytree(trained, workdir)
  os.remove(workdir / 'summary.json')
  return workdir


def test_a_refused_resume_after_a_damaged_latest_keeps_every_file(run, mnist_small_dir):
  damage_checkpoint(run, 'latest', 2)
  before = snapshot(run)
  out = _main(_flags(mnist_small_dir, run, epochs=3))   # the schedule spans 2 epochs
  one_error_line(out, 'num_epochs')
  assert snapshot(run) == before


@pytest.mark.parametrize('name, cut', [('metrics.jsonl', 'last line'),
                                       ('config.json', 'not json')])
def test_a_damaged_run_file_is_one_error_line_and_nothing_changes(run, mnist_small_dir,
                                                                   name, cut):
  path = run / name
  text = path.read_text()
  path.write_text(text[:len(text) - 25] if cut == 'last line' else '{"seed": 0, oops')
  before = snapshot(run)
  out = _main(_flags(mnist_small_dir, run))
  one_error_line(out, name)
  assert snapshot(run) == before


def test_a_resume_refused_for_missing_data_changes_nothing(run, tmp_path):
  before = snapshot(run)
  out = _main(_flags(str(tmp_path / 'no_data'), run))
  one_error_line(out)
  assert snapshot(run) == before


def test_a_damaged_latest_is_set_aside_and_the_best_survives_the_replay(run,
                                                                        mnist_small_dir):
  """latest/2 damaged: the resume moves it aside (logged), replays epoch 2 from
  latest/1; best/2 stays on disk until the replay's own best is saved."""
  damage_checkpoint(run, 'latest', 2)
  out = _main(_flags(mnist_small_dir, run))
  assert out.returncode == 0, out.stderr[-3000:]
  assert 'Traceback' not in out.stderr and 'Event loop is closed' not in out.stderr
  assert 'damaged' in out.stderr and 'Resuming' in out.stderr
  assert 'deleted best' not in out.stderr
  assert os.listdir(run / 'checkpoints' / 'damaged') == ['latest-2']
  summary = json.loads((run / 'summary.json').read_text())
  assert sorted(os.listdir(run / 'checkpoints' / 'best')) == [str(summary['best_epoch'])]
  records = [json.loads(l) for l in (run / 'metrics.jsonl').read_text().splitlines()]
  assert [r['epoch'] for r in records] == [1, 2]


def test_a_damaged_best_checkpoint_reads_the_best_weights_from_latest(
    tmp_path, small_config, script_val_accuracy):
  """e* = 1 (scripted validation), 'latest' keeps every epoch: with best/1 damaged
  and latest/3 gone, the resume reads e*'s weights from latest/1 and ends as the
  uninterrupted run does."""
  from mnist_jax.engine import trainer  # pylint: disable=g-import-not-at-top
  small_config.data.train_limit, small_config.num_epochs = 300, 3
  small_config.checkpoint_every_epochs, small_config.keep_checkpoints = 1, 3
  script_val_accuracy([0.9, 0.5, 0.4])
  workdir = tmp_path / 'run'
  first = trainer.train_and_evaluate(small_config, str(workdir)).summary
  assert first['best_epoch'] == 1
  damage_checkpoint(workdir, 'best', 1)
  shutil.rmtree(workdir / 'checkpoints' / 'latest' / '3')
  os.remove(workdir / 'summary.json')
  script_val_accuracy([0.4])
  again = trainer.train_and_evaluate(small_config, str(workdir)).summary
  assert again['best_epoch'] == 1
  assert again['test_accuracy_at_best_val'] == first['test_accuracy_at_best_val']
  assert again['test_accuracy'] == first['test_accuracy']
