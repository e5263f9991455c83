"""Trains a config on the real MNIST and writes its result row as a markdown table.

  python experiments/concepts/reproduce.py --config=configs/cnn.py \
      --data_dir=$MNIST_DIR --out=experiments/results/cnn.md

--data_dir points at the four IDX files (omit it to use TFDS, which downloads);
quoted, '$MNIST_DIR' is expanded here, so the recorded command stays portable.
The row: config, test accuracy (last epoch), best-validation epoch and the test
accuracy there, epochs, training wall time, images/s, hardware, date, command.
--out holds the latest run's row only (the current figure; git keeps the history).
"""
import os
import shlex
import sys
import tempfile
import time

from absl import app, flags
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import hardware  # pylint: disable=g-import-not-at-top,wrong-import-position
from mnist_jax.engine import driver  # pylint: disable=g-import-not-at-top,wrong-import-position
from mnist_jax.inspection import figures  # pylint: disable=g-import-not-at-top,wrong-import-position

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file.')
_DATA_DIR = flags.DEFINE_string('data_dir', None, 'Folder with the IDX files (else TFDS).')
_OUT = flags.DEFINE_string('out', None, 'Markdown file to write the table to.')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Run directory (default: a temp dir).')

HEADER = ('| config | test acc. | best val epoch: test acc. | epochs | train time | '
          'images/s | hardware | date | command |\n|---|---|---|---|---|---|---|---|---|\n')


def main(argv):
  del argv
  config = _CONFIG.value
  if _DATA_DIR.value:   # '$MNIST_DIR' quoted on the command line is recorded as written
    config.data.source, config.data.data_dir = 'idx', os.path.expandvars(_DATA_DIR.value)
  workdir = _WORKDIR.value or tempfile.mkdtemp(prefix='reproduce_')
  results = driver.train([config], [workdir])
  outcome = results.outcomes[0]
  if outcome.error is not None:
    raise outcome.error
  s = outcome.summary
  if config.write_plots:  # as python -m mnist_jax.main does (the engine draws none)
    figures.write_all(workdir, config, outcome.state, results.data)
  command = 'python ' + ' '.join(shlex.quote(a) for a in sys.argv)
  row = (f"| {flags.FLAGS['config'].config_filename} | {100 * s['test_accuracy']:.2f} % | "
         f"{s['best_epoch']}: {100 * s['test_accuracy_at_best_val']:.2f} % | {s['epochs']} | "
         f"{s['train_time_s']:.0f} s | {s['images_per_s']:.0f} | {hardware.describe()} | "
         f"{time.strftime('%Y-%m-%d')} | `{command}` |\n")
  print(HEADER + row)
  if _OUT.value:
    with open(_OUT.value, 'w') as f:
      f.write(HEADER + row)


if __name__ == '__main__':
  flags.mark_flags_as_required(['config'])
  app.run(main)
