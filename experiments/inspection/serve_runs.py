"""The runs the serve page's figures show: LeNet-5 and the MLP, trained into one folder.

  python -m experiments.inspection.serve_runs --runs=runs/serve_demo [--data_dir=DIR] [--epochs=3]

Trains configs/lenet.py and configs/mlp.py (``--epochs`` each; their learning-rate
schedules span that many epochs) on the MNIST IDX files in --data_dir (default: the committed
5,000-image fixture tests/fixtures/mnist_small), 5,000 (fixture: 500) images held
out for validation, into RUNS/lenet and RUNS/mlp. Then
``python -m mnist_jax.serve --runs=RUNS`` serves them; experiments/inspection/serve_latency.py
and experiments/inspection/serve_screenshots.py measure and picture that page.
"""
import os

from absl import app, flags

from experiments import report
from mnist_jax.config import files as config_files
from mnist_jax.engine import trainer

FIXTURE = os.path.join(report.ROOT, 'tests', 'fixtures', 'mnist_small')
_RUNS = flags.DEFINE_string('runs', None, 'Folder to train the runs into.', required=True)
_DATA_DIR = flags.DEFINE_string('data_dir', FIXTURE, 'Folder with the MNIST IDX files.')
_EPOCHS = flags.DEFINE_integer('epochs', 3, 'Epochs per run.')


def train_runs(runs: str, data_dir: str = FIXTURE, epochs: int = 3) -> dict:
  """{name: summary} of lenet and mlp trained into runs/<name>."""
  summaries = {}
  for name in ('lenet', 'mlp'):
    config = config_files.load(os.path.join(report.ROOT, 'configs', f'{name}.py'))
    config.data.source, config.data.data_dir, config.data.download = 'idx', data_dir, False
    config.data.val_size = 500 if data_dir == FIXTURE else 5000
    config.num_epochs, config.write_plots = epochs, False
    summaries[name] = trainer.train_and_evaluate(config, os.path.join(runs, name)).summary
  return summaries


def main(argv):
  del argv
  summaries = train_runs(_RUNS.value, os.path.abspath(_DATA_DIR.value), _EPOCHS.value)
  for name, summary in summaries.items():
    print(f"{name}: test accuracy {summary['test_accuracy']:.4f} after {_EPOCHS.value} epochs")


if __name__ == '__main__':
  app.run(main)
