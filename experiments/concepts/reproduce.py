"""Trains a config on the real MNIST and writes its result row as a markdown table.

  python -m experiments.concepts.reproduce --config=configs/cnn.py \\
      --data_dir=$MNIST_DIR --out=experiments/results/cnn.md

--data_dir points at the four IDX files (omit it to use TFDS, which downloads).
The row: config, test accuracy (last epoch), best-validation epoch and the test
accuracy there, epochs, training wall time, images/s, hardware, date, command.
--out holds the latest run's row only (the current figure; git keeps the history).
"""
import tempfile
import time

from absl import app, flags
from ml_collections import config_flags

from experiments import hardware, report
from mnist_jax.engine import stacked
from mnist_jax.inspection import figures

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file.')
flags.mark_flag_as_required('config')
_DATA_DIR = flags.DEFINE_string('data_dir', None, 'Folder with the IDX files (else the download cache, MNIST fetched on first use).')
_OUT = flags.DEFINE_string('out', None, 'Markdown file to write the table to.')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Run directory (default: a temp dir).')

HEADER = ['| config | test acc. | best val epoch: test acc. | epochs | train time | '
          'images/s | hardware | date | command |', '|---|---|---|---|---|---|---|---|---|']


def main(argv):
  del argv
  config = _CONFIG.value
  if _DATA_DIR.value:
    config.data.source, config.data.data_dir = 'idx', _DATA_DIR.value
  workdir = _WORKDIR.value or tempfile.mkdtemp(prefix='reproduce_')
  outcome = stacked.train([config], [workdir])[0]
  if outcome.error is not None:
    raise outcome.error
  s = outcome.summary
  if config.write_plots:  # as python -m mnist_jax.main does (the engine draws none)
    figures.write_all(workdir, config, outcome.state, outcome.data)
  row = (f"| {flags.FLAGS['config'].config_filename} | {100 * s['test_accuracy']:.2f} % | "
         f"{s['best_epoch']}: {100 * s['test_accuracy_at_best_val']:.2f} % | {s['epochs']} | "
         f"{s['train_time_s']:.0f} s | {s['images_per_s']:.0f} | {hardware.describe()} | "
         f"{time.strftime('%Y-%m-%d')} | `{report.command()}` |")
  if _OUT.value:
    report.write_markdown(_OUT.value, HEADER + [row])
  else:
    print('\n'.join(HEADER + [row]))


if __name__ == '__main__':
  app.run(main)
