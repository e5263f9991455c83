"""The runs the serve page's README figures show: LeNet-5 and the MLP, trained into one folder.

  python experiments/inspection/serve_runs.py --runs=runs/serve_demo [--data_dir=DIR] [--epochs=3]

Trains configs/lenet.py and configs/mlp.py (``--epochs`` each; their learning-rate
schedules span that many epochs) on the MNIST IDX files in --data_dir (default: the committed
5,000-image fixture tests/fixtures/mnist_small), 5,000 (fixture: 500) images held
out for validation, into RUNS/lenet and RUNS/mlp. Then
``python -m mnist_jax.serve --runs=RUNS`` serves them; experiments/inspection/serve_latency.py
and experiments/inspection/serve_screenshots.py measure and picture that page.
"""
import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURE = os.path.join(ROOT, 'tests', 'fixtures', 'mnist_small')


def load_config(name):
  sys.path.insert(0, ROOT)
  from mnist_jax.config import defaults  # pylint: disable=g-import-not-at-top
  return defaults.load(os.path.join(ROOT, 'configs', f'{name}.py'))


def train_runs(runs: str, data_dir: str = FIXTURE, epochs: int = 3) -> dict:
  """{name: summary} of lenet and mlp trained into runs/<name>."""
  sys.path.insert(0, ROOT)
  from mnist_jax.engine import driver  # pylint: disable=g-import-not-at-top
  summaries = {}
  for name in ('lenet', 'mlp'):
    config = load_config(name)
    config.data.source, config.data.data_dir, config.data.download = 'idx', data_dir, False
    config.data.val_size = 500 if data_dir == FIXTURE else 5000
    config.num_epochs, config.write_plots = epochs, False
    summaries[name] = driver.train_and_evaluate(config, os.path.join(runs, name))
  return summaries


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--runs', required=True, help='folder to train the runs into')
  parser.add_argument('--data_dir', default=FIXTURE, help='folder with the MNIST IDX files')
  parser.add_argument('--epochs', type=int, default=3)
  args = parser.parse_args()
  for name, summary in train_runs(args.runs, os.path.abspath(args.data_dir), args.epochs).items():
    print(f"{name}: test accuracy {summary['test_accuracy']:.4f} after {args.epochs} epochs")


if __name__ == '__main__':
  main()
