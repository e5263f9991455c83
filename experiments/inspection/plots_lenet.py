"""The README's pictures: LeNet-5 (configs/lenet.py) trained on the real MNIST.

  python -m experiments.inspection.plots_lenet --data_dir=$MNIST_DIR [--epochs=3]

Trains configs/lenet.py (with --epochs overriding num_epochs; the schedule is
stretched to fit) in --workdir (engine.trainer.train_and_evaluate), then draws every plot of
mnist_jax.inspection.figures of the final state there (the engine draws none) and
copies the chosen ones to experiments/results/lenet_<name>.png. Without
--data_dir MNIST comes from the download cache (fetched on first use). Prints the command, the machine and the
final metrics (a PNG holds no command line).
"""
import os
import shutil
import time

from absl import app, flags

from experiments import report
from mnist_jax import cli
from mnist_jax.config import files as config_files
from mnist_jax.engine import trainer
from mnist_jax.inspection import figures

_EPOCHS = flags.DEFINE_integer('epochs', 0, 'epochs (0 = the config\'s, 10)')
_DATA_DIR = flags.DEFINE_string('data_dir', None, 'folder with the MNIST IDX files '
                                '(default: the download cache)')
_WORKDIR = flags.DEFINE_string('workdir', None, 'run directory (default: a new '
                               'runs/plots_lenet_<time>)')
_COPY = flags.DEFINE_list('copy', ['curves', 'confusion'], 'plots copied to '
                          'experiments/results/lenet_<name>.png')


def lenet_config():
  return config_files.load(os.path.join(report.ROOT, 'configs', 'lenet.py'))


def main(argv):
  del argv
  cli.quiet_logs()  # orbax's INFO lines (and the libtpu probe)
  config = lenet_config()
  config.num_epochs = _EPOCHS.value or config.num_epochs
  if _DATA_DIR.value:
    config.data.source, config.data.data_dir = 'idx', _DATA_DIR.value
  workdir = _WORKDIR.value or os.path.join(
      'runs', f"plots_lenet_{time.strftime('%Y%m%d-%H%M%S')}")
  outcome = trainer.train_and_evaluate(config, workdir)
  summary = outcome.summary
  figures.write_all(workdir, config, outcome.state, outcome.data)  # = the latest checkpoint
  os.makedirs(report.RESULTS, exist_ok=True)
  for name in _COPY.value:
    target = os.path.join(report.RESULTS, f'lenet_{name}.png')
    shutil.copyfile(os.path.join(workdir, 'plots', f'{name}.png'), target)
    print(f'{target}: {os.path.getsize(target) // 1024} KB')
  print(f"`{report.command()}`: LeNet-5, {summary['epochs']} epochs, test accuracy "
        f"{summary['test_accuracy']:.4f}, {summary['train_time_s']:.0f} s training; "
        f'{report.machine()} Workdir {workdir}.')


if __name__ == '__main__':
  app.run(main)
