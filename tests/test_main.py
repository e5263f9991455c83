"""End to end on the committed real-MNIST fixture: the command line, the files a
run writes, resume after SIGKILL, and one-line errors for bad input."""
import gzip
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import pytest

from mnist_jax.config import defaults, files as config_files
from mnist_jax.engine import epoch, trainer
from mnist_jax.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def small_flags(data_dir, epochs):
  """configs/mlp.py on the small fixture, without plots (what the command does is
  the same for every model: conftest.py's lenet_run trains LeNet-5 with plots)."""
  return ['--config=configs/mlp.py', '--config.write_plots=False', '--config.data.source=idx',
          f'--config.data.data_dir={data_dir}', '--config.data.val_size=500',
          f'--config.num_epochs={epochs}', '--config.warmup_epochs=0.2',
          '--config.batch_size=100', '--config.eval_batch_size=500',
          '--config.log_every_steps=15']


def run_main(args):
  return subprocess.run([sys.executable, '-m', 'mnist_jax.main', *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=600)


def small_config(data_dir, **overrides):
  config = defaults.get_config()
  config.data.source, config.data.data_dir, config.data.val_size = 'idx', data_dir, 500
  config.data.download = False   # a missing file is an error here, not a download
  config.batch_size, config.eval_batch_size, config.num_epochs = 100, 500, 1
  config.write_plots = False
  for key, value in overrides.items():
    config[key] = value
  return config


def test_main_trains_and_writes_its_files(lenet_run):
  """The bare command (no --workdir; conftest.py's lenet_run) makes a new run
  directory runs/lenet_* under its working directory and writes there its
  summary, metrics, TensorBoard events, checkpoints and plots. (Reading the run
  back: tests/test_predict.py.)"""
  workdir = lenet_run.workdir
  runs = os.listdir(os.path.dirname(workdir))
  assert len(runs) == 1 and runs[0].startswith('lenet_')
  assert f"workdir: {os.path.join('runs', runs[0])}" in lenet_run.stdout
  with open(os.path.join(workdir, 'summary.json')) as f:
    summary = json.load(f)
  for key in ('test_accuracy', 'test_loss', 'val_accuracy', 'epochs', 'train_time_s',
              'images_per_s', 'num_params', 'config'):
    assert key in summary
  assert summary['epochs'] == 3 and summary['num_params'] == 61706
  assert summary['test_accuracy'] > 0.9  # 4,500 real training digits, 3 epochs
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    records = [json.loads(l) for l in f.read().splitlines()]
  assert [r['epoch'] for r in records] == [1, 2, 3]
  assert {'train_loss', 'train_accuracy', 'val_loss', 'val_accuracy', 'val_nll', 'val_ece',
          'images_per_s'} <= set(records[0])
  assert not [key for r in records for key in r if 'test' in key]   # test: once, at the end
  assert 'test loss' not in lenet_run.stderr                         # nor in the epoch lines
  assert records[2]['train_loss'] < records[1]['train_loss'] < records[0]['train_loss']
  assert summary['val_accuracy'] == records[-1]['val_accuracy']
  assert any(f.startswith('events.out.tfevents')
             for f in os.listdir(os.path.join(workdir, 'tensorboard')))
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints', 'latest'))) == ['2', '3']
  assert 'steps (' in lenet_run.stderr  # the in-epoch progress line
  assert {'curves.png', 'confusion.png', 'filters.png'} <= set(
      os.listdir(os.path.join(workdir, 'plots')))


def test_sigkill_and_resume_give_the_same_metrics(tmp_path, mnist_small_dir):
  """Kill a 6-epoch run after its first checkpoint; the restarted run ends
  with exactly the metrics of an uninterrupted run with the same seed. The MLP
  (what resume restores is the same for every model) with dropout and
  augmentation, so the resumed epochs must redraw both the same way; its five
  later epochs leave about a second to kill it in."""
  flags = small_flags(mnist_small_dir, epochs=6) + [
      '--config.model.hidden=(64,)', '--config.augment.translate=1.0',
      '--config.augment.rotate=10.0']
  whole = run_main(flags + [f'--workdir={tmp_path / "whole"}'])
  assert whole.returncode == 0, whole.stderr[-2000:]
  workdir = tmp_path / 'killed'
  proc = subprocess.Popen([sys.executable, '-m', 'mnist_jax.main', *flags,
                           f'--workdir={workdir}'], cwd=ROOT,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  first = workdir / 'checkpoints' / 'latest' / '1'
  deadline = time.time() + 300
  while not first.exists() and time.time() < deadline and proc.poll() is None:
    time.sleep(0.05)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert first.exists(), 'the run never wrote its first checkpoint'
  assert not (workdir / 'summary.json').exists()
  resumed = run_main(flags + [f'--workdir={workdir}'])
  assert resumed.returncode == 0, resumed.stderr[-2000:]
  assert 'Resuming' in resumed.stderr
  assert f'workdir: {workdir}' in resumed.stdout   # the directory it was given
  a = json.loads((tmp_path / 'whole' / 'summary.json').read_text())
  b = json.loads((workdir / 'summary.json').read_text())
  for key in ('test_accuracy', 'test_loss', 'val_accuracy', 'val_loss', 'epochs'):
    assert a[key] == b[key], key
  lines = (workdir / 'metrics.jsonl').read_text().splitlines()
  assert [json.loads(l)['epoch'] for l in lines] == [1, 2, 3, 4, 5, 6]


def test_same_seed_same_metrics_in_process(tmp_path, mnist_small_dir):
  config = small_config(mnist_small_dir)
  config.data.train_limit = 1000
  a = trainer.train_and_evaluate(config, str(tmp_path / 'a')).summary
  b = trainer.train_and_evaluate(config, str(tmp_path / 'b')).summary
  assert (a['test_loss'], a['val_loss']) == (b['test_loss'], b['val_loss'])
  config.seed = 1
  c = trainer.train_and_evaluate(config, str(tmp_path / 'c')).summary
  assert c['test_loss'] != a['test_loss']


def test_step_loop_mode_trains_like_the_scan_loop(tmp_path, mnist_small_dir, caplog):
  """loop_mode='step' (one dispatch per step) runs the same steps as 'scan', and
  compiles its train step once although the epoch's chunks differ in length (the
  MLP: the loop is the same for every model)."""
  config = small_config(mnist_small_dir)
  config.data.train_limit = 1000
  config.model.name, config.model.hidden = 'mlp', (64,)
  config.log_every_steps = 3
  assert len(set(epoch.chunks(5, 3))) == 2   # 5 steps of 100: chunks of 3 and 2
  a = trainer.train_and_evaluate(config, str(tmp_path / 'scan')).summary
  config.loop_mode = 'step'
  with jax.log_compiles(), caplog.at_level(logging.WARNING):
    b = trainer.train_and_evaluate(config, str(tmp_path / 'step')).summary
  for key in ('test_loss', 'val_loss', 'test_accuracy'):
    assert b[key] == pytest.approx(a[key], abs=1e-5), key
  steps = [r.getMessage() for r in caplog.records
           if r.getMessage().startswith('Compiling jit(one_step)')]
  assert len(steps) == 1, steps


@pytest.mark.parametrize('args, message', [
    (['--config.learnin_rate=0.1'], 'unknown config key'),
    (['--config.model.name=resnet9000'], "unknown model 'resnet9000'"),
    (['--compilation_cache=/proc/mnist_jax_cache'], 'cannot make the compilation cache'),
    (['--config.optimizer=sgd', '--config.learning_rate=1e9',
      '--config.schedule=constant'], 'training loss became nan'),
])
def test_bad_input_gives_one_line_and_exit_2(tmp_path, mnist_small_dir, args, message):
  out = run_main(small_flags(mnist_small_dir, epochs=1) + args +
                 [f'--workdir={tmp_path / "w"}'])
  assert out.returncode == 2, out.stderr[-2000:]
  errors = [l for l in out.stderr.splitlines() if l.startswith('error:')]
  assert len(errors) == 1 and message in errors[0], out.stderr[-2000:]
  assert 'Traceback' not in out.stderr


@pytest.mark.parametrize('overrides, message', [
    ({'learning_rate': -1.0}, 'learning_rate must be > 0'),
    ({'loop_mode': 'while'}, "loop_mode must be 'scan' or 'step'"),
    ({'batch_size': 0}, 'batch_size must be > 0'),
    ({'num_epochs': 0}, 'num_epochs must be > 0'),
    ({'momentum': 1.5}, 'momentum must be in'),
    ({'weight_decay': -1.0}, 'weight_decay must be >= 0'),
    ({'num_devices': 64}, 'only 1 local devices'),
])
def test_impossible_hyperparameters(tmp_path, mnist_small_dir, overrides, message):
  with pytest.raises(UserError, match=message):
    trainer.train_and_evaluate(small_config(mnist_small_dir, **overrides), str(tmp_path / 'w'))


def test_missing_and_corrupt_data_files(tmp_path, mnist_small_dir):
  with pytest.raises(UserError, match='not found|no such|missing'):
    trainer.train_and_evaluate(small_config(str(tmp_path / 'nowhere')), str(tmp_path / 'w'))
  assert not (tmp_path / 'w').exists()       # a failed start leaves no run directory
  broken = tmp_path / 'broken'
  shutil.copytree(mnist_small_dir, broken)
  path = broken / 'train-images-idx3-ubyte.gz'
  data = gzip.decompress(path.read_bytes())
  path.write_bytes(gzip.compress(data[: len(data) // 2]))
  with pytest.raises(UserError, match='truncated|re-download'):
    trainer.train_and_evaluate(small_config(str(broken)), str(tmp_path / 'w'))


def test_unwritable_workdir(tmp_path, mnist_small_dir):
  blocker = tmp_path / 'file'
  blocker.write_text('not a directory')
  with pytest.raises(UserError, match='cannot write to workdir'):
    trainer.train_and_evaluate(small_config(mnist_small_dir), str(blocker / 'run'))


def test_resuming_with_a_different_config_is_refused(tmp_path, mnist_small_dir):
  config = small_config(mnist_small_dir)
  config.data.train_limit = 500
  config.model.name, config.model.hidden = 'mlp', (64,)
  trainer.train_and_evaluate(config, str(tmp_path / 'w'))
  config.learning_rate = 0.5
  with pytest.raises(UserError, match='different config .*learning_rate'):
    trainer.train_and_evaluate(config, str(tmp_path / 'w'))


@pytest.mark.parametrize('name', sorted(f[:-3] for f in os.listdir(os.path.join(ROOT, 'configs'))
                                        if f.endswith('.py')))
def test_every_config_file_is_valid_and_builds_its_model(name):
  """configs/*.py (the record recipes too, whose full runs take hours) pass the
  checks a run starts with, and their model and optimizer initialize (shapes
  only: jax.eval_shape)."""
  import jax  # pylint: disable=g-import-not-at-top
  from mnist_jax import train  # pylint: disable=g-import-not-at-top
  from mnist_jax.config import validate  # pylint: disable=g-import-not-at-top
  config = config_files.load(os.path.join(ROOT, 'configs', name + '.py'))
  validate.check(config, 1)
  state = jax.eval_shape(lambda: train.create_train_state(config, jax.random.key(0),
                                                         num_train=55_000))
  assert jax.tree_util.tree_leaves(state.params)
