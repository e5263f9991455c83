"""A short ensemble run on the small MNIST fixture: members vs ensemble, reliability.

  python experiments/ensemble_fixture.py [--config=configs/lenet.py] [--size=5] \
      [--epochs=3] [--train_limit=0] [--name=lenet]

Trains ``--config`` with config.ensemble.size = ``--size`` (members seeds 0..K−1,
one vmapped program, engine/ensemble.py) on tests/fixtures/mnist_small (4,500
training images or the first ``--train_limit``, 500 validation, 1,000 test:
the FIXTURE, not the full MNIST; its numbers are not records), draws the run's
plots and copies its reliability diagram (member 0 = the config's single run
beside the ensemble) to experiments/results/ensemble_<name>_reliability.png.
Writes experiments/results/ensemble_<name>_fixture.md: test accuracy, NLL and ECE
of every member, their mean and the ensemble (and of the EMA weights when the
config has them), and the training time.

It is also the pilot of the record configs (configs/record_*.py): a check that
they train, before the hours their full runs take.
"""
import os
import shlex
import shutil
import sys
import tempfile

from absl import app, flags
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# pylint: disable=g-import-not-at-top,wrong-import-position
import hardware
import report
from mnist_jax import cli
from mnist_jax.engine import driver
from mnist_jax.inspection import figures
# pylint: enable=g-import-not-at-top,wrong-import-position

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_CONFIG = config_flags.DEFINE_config_file('config', 'configs/lenet.py', 'member config',
                                          lock_config=False)
_SIZE = flags.DEFINE_integer('size', 5, 'ensemble size K')
_EPOCHS = flags.DEFINE_integer('epochs', 3, 'epochs (the schedule spans them)')
_TRAIN_LIMIT = flags.DEFINE_integer('train_limit', 0, 'training images (0 = all 4,500)')
_NAME = flags.DEFINE_string('name', 'lenet', 'results/ensemble_<name>_*')
_DATA_DIR = flags.DEFINE_string('data_dir', 'tests/fixtures/mnist_small', 'IDX folder')


def _row(name, m, ema: bool) -> str:
  cells = [f"{m['test_accuracy']:.4f}", f"{m['test_nll']:.4f}", f"{m['test_ece']:.4f}",
           f"{m['val_accuracy']:.4f}"]
  if ema:
    cells += [f"{m['test_accuracy_ema']:.4f}", f"{m['test_ece_ema']:.4f}"]
  return f'| {name} | ' + ' | '.join(cells) + ' |'


def main(argv):
  del argv
  cli.quiet_logs()
  config = _CONFIG.value
  config.data.source, config.data.data_dir, config.data.download = 'idx', _DATA_DIR.value, False
  config.data.val_size, config.data.train_limit = 500, _TRAIN_LIMIT.value
  config.num_epochs, config.warmup_epochs = _EPOCHS.value, min(config.warmup_epochs, 0.5)
  config.ensemble.size, config.seed, config.write_plots = _SIZE.value, 0, False
  with tempfile.TemporaryDirectory() as workdir:
    results = driver.train([config], [workdir])
    outcome = results.outcomes[0]
    if outcome.error is not None:
      raise outcome.error
    figures.write_all(workdir, config, outcome.state, results.data, tensorboard=False)
    target = os.path.join(ROOT, 'experiments', 'results',
                          f'ensemble_{_NAME.value}_reliability.png')
    shutil.copyfile(os.path.join(workdir, 'plots', 'reliability.png'), target)
  s = outcome.summary
  ema = bool(config.ema_decay)
  head = '| | test accuracy | test NLL | test ECE | val accuracy |' + (
      ' test accuracy (EMA) | test ECE (EMA) |' if ema else '')
  lines = [
      f'# {_SIZE.value} x {config.model.name} on the small fixture '
      f'({os.path.basename(flags.FLAGS["config"].config_filename)})', '',
      f'`python {" ".join(shlex.quote(a) for a in sys.argv)}`', '',
      f'Hardware: {hardware.describe()}. The FIXTURE (tests/fixtures/mnist_small: '
      f'{s["train_images_in_process"]} training, 500 validation, 1,000 test images), '
      f'{s["epochs"]} epochs: a pilot, not a record. Training {s["train_time_s"]:.0f} s '
      f'({_SIZE.value} member(s) in one vmapped program). Reliability diagram: '
      f'{os.path.relpath(target, ROOT)}.', '', head, '|---' * (head.count('|') - 1) + '|']
  if _SIZE.value == 1:   # a single run (the pilot of configs/record_single.py)
    lines.append(_row('single model, seed 0', s, ema))
  else:
    for m in s['ensemble']['members']:
      lines.append(_row(f"member, seed {m['seed']}", m, ema))
    lines.append(_row('member mean', s['ensemble']['member_mean'], ema))
    lines.append(_row(f'**ensemble of {_SIZE.value}** (mean of probabilities)', s, ema))
  report.write_markdown(os.path.join(ROOT, 'experiments', 'results',
                                     f'ensemble_{_NAME.value}_fixture.md'), lines)


if __name__ == '__main__':
  app.run(main)
