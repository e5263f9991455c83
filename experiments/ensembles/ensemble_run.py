"""An ensemble run: members vs ensemble, EMA vs raw weights, reliability, the val trail.

  python -m experiments.ensembles.ensemble_run [--config=configs/lenet.py] [--size=5] \\
      [--epochs=3] [--train_limit=0] [--name=lenet]              # the small fixture
  python -m experiments.ensembles.ensemble_run --config=configs/record_cpu.py --size=0 \\
      --epochs=0 --data_dir=$MNIST_DIR --name=record_cpu  # the full MNIST
  python -m experiments.ensembles.ensemble_run --config=configs/cnn.py --size=0 --epochs=0 \\
      --data_dir=/tmp/fashion_mnist --dataset=fashion_mnist --name=cnn  # another dataset

Trains ``--config`` with config.ensemble.size = ``--size`` (0: the config's;
members seeds 0..K−1, one vmapped program, engine/ensemble.py) for ``--epochs``
(0: the config's) on tests/fixtures/mnist_small (4,500 training images or the
first ``--train_limit``, 500 validation, 1,000 test: the FIXTURE, whose numbers
are not records) or on the full MNIST in ``--data_dir`` (55,000 / 5,000 /
10,000; with ``--dataset``, another 28x28 IDX dataset of that size), draws the
run's plots and copies its reliability diagram (member 0 = the config's single
run beside the ensemble) to
experiments/results/ensemble_<name>[_<dataset>]_reliability.png. Writes
experiments/results/ensemble_<name>_<fixture|dataset>.md: test accuracy, NLL and
ECE of every member, their mean ± std and the ensemble (and of the EMA weights
when the config has them), the validation accuracy of every epoch (the
selection trail) and the training time.

On the fixture it is the pilot of the record configs (configs/record_*.py): a
check that they train, before the hours their full runs take.
"""
import os
import shutil
import tempfile

import numpy as np
from absl import app, flags
from ml_collections import config_flags

from experiments import report
from mnist_jax import cli
from mnist_jax.engine import stacked
from mnist_jax.store import workdir as workdir_lib
from mnist_jax.inspection import figures

_CONFIG = config_flags.DEFINE_config_file('config', 'configs/lenet.py', 'member config',
                                          lock_config=False)
_SIZE = flags.DEFINE_integer('size', 5, 'ensemble size K')
_EPOCHS = flags.DEFINE_integer('epochs', 3, 'epochs (the schedule spans them)')
_TRAIN_LIMIT = flags.DEFINE_integer('train_limit', 0, 'training images (0 = all 4,500)')
_NAME = flags.DEFINE_string('name', 'lenet', 'results/ensemble_<name>_*')
_DATA_DIR = flags.DEFINE_string('data_dir', 'tests/fixtures/mnist_small', 'IDX folder')
_DATASET = flags.DEFINE_string('dataset', 'mnist', 'config.data.name of the IDX files in '
                               '--data_dir (e.g. fashion_mnist: experiments.data.fashion_mnist_idx)')
_WORKDIR = flags.DEFINE_string('workdir', '', 'keep the run here (default: a temporary folder)')
FIXTURE = 'tests/fixtures/mnist_small'


def _columns(ema: bool) -> list:
  return ['test_accuracy', 'test_nll', 'test_ece', 'val_accuracy'] + (
      ['test_accuracy_ema', 'test_ece_ema'] if ema else [])


def _row(name, m, ema: bool) -> str:
  return f'| {name} | ' + ' | '.join(f'{m[k]:.4f}' for k in _columns(ema)) + ' |'


def _std_row(members, ema: bool) -> str:
  return _row('member std', {k: np.std([m[k] for m in members], ddof=1)
                             for k in _columns(ema)}, ema)


def _trail(workdir: str, ema: bool) -> list:
  """The validation accuracy of every epoch (ensemble; EMA weights too)."""
  key = 'val_accuracy_ema' if ema else 'val_accuracy'
  return ['', f'Validation accuracy by epoch ({key}, the ensemble; the selection trail): ' +
          ', '.join(f"{r['epoch']}: {r[key]:.4f}" for r in workdir_lib.load_history(workdir)) + '.']


def main(argv):
  del argv
  cli.quiet_logs()
  config = _CONFIG.value
  fixture = os.path.abspath(_DATA_DIR.value) == os.path.join(report.ROOT, FIXTURE)
  config.data.source, config.data.data_dir, config.data.download = 'idx', _DATA_DIR.value, False
  config.data.name = _DATASET.value
  config.data.val_size, config.data.train_limit = 500 if fixture else 5000, _TRAIN_LIMIT.value
  if _EPOCHS.value:
    config.num_epochs, config.warmup_epochs = _EPOCHS.value, min(config.warmup_epochs, 0.5)
  if _SIZE.value:
    config.ensemble.size = _SIZE.value
  size, config.seed, config.write_plots = config.ensemble.size, 0, False
  other = '' if _DATASET.value == 'mnist' else f'_{_DATASET.value}'
  with tempfile.TemporaryDirectory() as tmp:
    workdir = _WORKDIR.value or tmp
    outcome = stacked.train([config], [workdir])[0]
    if outcome.error is not None:
      raise outcome.error
    figures.write_all(workdir, config, outcome.state, outcome.data, tensorboard=False)
    target = os.path.join(report.RESULTS, f'ensemble_{_NAME.value}{other}_reliability.png')
    shutil.copyfile(os.path.join(workdir, 'plots', 'reliability.png'), target)
    trail = _trail(workdir, bool(config.ema_decay))
  s = outcome.summary
  ema = bool(config.ema_decay)
  head = '| | test accuracy | test NLL | test ECE | val accuracy |' + (
      ' test accuracy (EMA) | test ECE (EMA) |' if ema else '')
  data = (f'The FIXTURE ({FIXTURE}: {s["train_images_in_process"]} training, 500 '
          'validation, 1,000 test images): a pilot, not a record' if fixture else
          f'The full {_DATASET.value} ({s["train_images_in_process"]} training, 5,000 '
          'validation, 10,000 test images)')
  lines = [
      f'# {size} x {config.model.name}, '
      f'{os.path.basename(flags.FLAGS["config"].config_filename)}', '',
      f'`{report.command()}`', '',
      f'{report.machine()} {data}; {s["epochs"]} epochs. Training '
      f'{s["train_time_s"]:.0f} s ({size} member(s) in one vmapped program). Reliability '
      f'diagram: {os.path.relpath(target, report.ROOT)}.', '', head,
      '|---' * (head.count('|') - 1) + '|']
  if size == 1:   # a single run (the pilot of configs/record_single.py)
    lines.append(_row('single model, seed 0', s, ema))
  else:
    for m in s['ensemble']['members']:
      lines.append(_row(f"member, seed {m['seed']}", m, ema))
    lines.append(_row('member mean', s['ensemble']['member_mean'], ema))
    lines.append(_std_row(s['ensemble']['members'], ema))
    lines.append(_row(f'**ensemble of {size}** (mean of probabilities)', s, ema))
  report.write_markdown(os.path.join(report.RESULTS, f'ensemble_{_NAME.value}_'
                                     f'{"fixture" if fixture else _DATASET.value}.md'), lines + trail)


if __name__ == '__main__':
  app.run(main)
