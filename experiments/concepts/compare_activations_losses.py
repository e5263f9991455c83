"""The primer's activations on the MLP and its losses on the CNN, on real MNIST.

  python experiments/concepts/compare_activations_losses.py \\
      [--epochs=N] [--train_limit=N] [--data_dir=$MNIST_DIR]

Part 1 trains configs/mlp.py (784 -> 500 -> 10) once per hidden activation:
step, sigmoid, tanh, relu, leaky_relu, softmax. Two are odd on purpose:
- step: 1[z >= 0] has zero gradient, so backprop never changes the hidden
  layer; only the output layer learns, on fixed random binary features.
- softmax as a hidden activation: the 500 hidden units are forced to sum to 1
  (each ≈ 1/500), a bottleneck the primer lists only for the output layer.
Part 2 trains configs/cnn.py once per loss: cce, bce, mse, mae.
Every run uses the normal trainer (engine.driver.train, then the plots of
inspection.figures if config.write_plots, as mnist_jax.main) with the config's
hyperparameters; --epochs and --train_limit shrink the runs. Writes
experiments/results/activations_losses.{md,png} with the command and hardware.
"""
import os
import shlex
import sys
import time

import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import hardware  # pylint: disable=g-import-not-at-top,wrong-import-position
from mnist_jax.engine import driver  # pylint: disable=g-import-not-at-top,wrong-import-position
from mnist_jax.config import defaults  # pylint: disable=g-import-not-at-top,wrong-import-position
from mnist_jax.inspection import figures  # pylint: disable=g-import-not-at-top,wrong-import-position

ACTIVATIONS = ('step', 'sigmoid', 'tanh', 'relu', 'leaky_relu', 'softmax')
LOSSES = ('cce', 'bce', 'mse', 'mae')

_EPOCHS = flags.DEFINE_integer('epochs', None, 'epochs per run (default: the config)')
_TRAIN_LIMIT = flags.DEFINE_integer('train_limit', 0, 'first N train images (0 = all)')
_ACTS = flags.DEFINE_list('activations', list(ACTIVATIONS), 'MLP hidden activations')
_LOSSES = flags.DEFINE_list('losses', list(LOSSES), 'CNN losses')
_MLP = flags.DEFINE_string('mlp_config', 'configs/mlp.py', 'MLP config file')
_CNN = flags.DEFINE_string('cnn_config', 'configs/cnn.py', 'CNN config file')
_DATA_DIR = flags.DEFINE_string('data_dir', None, 'folder with the IDX files (else TFDS)')
_WORKDIR = flags.DEFINE_string('workdir', None, 'root of the run dirs (default: '
                               'runs/compare_<time>)')
_OUT = flags.DEFINE_string('out', 'experiments/results/activations_losses',
                           'output path without extension (.md and .png)')


def load_config(path):
  config = defaults.load(path)
  if _EPOCHS.value:
    config.num_epochs = _EPOCHS.value
  config.data.train_limit = _TRAIN_LIMIT.value
  if _DATA_DIR.value:
    config.data.source, config.data.data_dir = 'idx', _DATA_DIR.value
  return config


def run(config, workdir, label):
  print(f'== {label}', flush=True)
  results = driver.train([config], [workdir])
  outcome = results.outcomes[0]
  if outcome.error is not None:
    raise outcome.error
  s = outcome.summary
  if config.write_plots:  # the engine draws none
    figures.write_all(workdir, config, outcome.state, results.data)
  return {'test': s['test_accuracy'], 'val': s['val_accuracy'],
          'loss': s['test_loss'], 'seconds': s['train_time_s'], 'epochs': s['epochs']}


def plot(act_results, loss_results, path):
  fig, axes = plt.subplots(1, 2, figsize=(11, 4))
  for ax, results, title in ((axes[0], act_results, 'MLP hidden activation'),
                             (axes[1], loss_results, 'CNN loss')):
    names = list(results)
    accs = [100 * results[n]['test'] for n in names]
    bars = ax.bar(names, accs, color='tab:blue')
    ax.bar_label(bars, fmt='%.2f')
    ax.set_title(title)
    ax.set_ylabel('test accuracy (%)')
    ax.set_ylim(max(0, min(accs) - 5), 100)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def main(argv):
  del argv
  root = _WORKDIR.value or os.path.join('runs', time.strftime('compare_%Y%m%d-%H%M%S'))
  act_results, loss_results = {}, {}
  for act in _ACTS.value:
    config = load_config(_MLP.value)
    config.model.activation = act
    act_results[act] = run(config, os.path.join(root, f'mlp_{act}'), f'mlp {act}')
  for loss in _LOSSES.value:
    config = load_config(_CNN.value)
    config.loss = loss
    loss_results[loss] = run(config, os.path.join(root, f'cnn_{loss}'), f'cnn {loss}')

  lines = ['| model | activation | loss | epochs | val acc | test acc | train s |',
           '|---|---|---|---:|---:|---:|---:|']
  for name, results, fixed in (('mlp', act_results, 'cce'), ('cnn', loss_results, 'relu')):
    for key, r in results.items():
      act, loss = (key, fixed) if name == 'mlp' else (fixed, key)
      val = f"{r['val']:.4f}" if r['val'] is not None else '-'
      lines.append(f"| {name} | {act} | {loss} | {r['epochs']} | {val} | "
                   f"{r['test']:.4f} | {r['seconds']:.1f} |")
  table = '\n'.join(lines)
  print(table)
  os.makedirs(os.path.dirname(_OUT.value) or '.', exist_ok=True)
  if act_results and loss_results:
    plot(act_results, loss_results, _OUT.value + '.png')
  limit = _TRAIN_LIMIT.value or 'all'
  with open(_OUT.value + '.md', 'w') as f:
    f.write('# Activations (MLP) and losses (CNN) on MNIST\n\n'
            f"Command: `python {' '.join(shlex.quote(a) for a in sys.argv)}`  \n"
            f'Hardware: {hardware.describe()}; train images: {limit}.\n\n{table}\n')
  print(f'wrote {_OUT.value}.md')


if __name__ == '__main__':
  app.run(main)
