"""The perceptron two ways: Rosenblatt's rule (step activation) vs gradient descent.

  python -m experiments.concepts.perceptron_rule --config=configs/perceptron.py \\
      [--epochs=5] [--gd_epochs=10] [--data_dir=$MNIST_DIR]

(a) The step activation 1[z >= 0] has zero gradient, so the layer is trained
    with the perceptron learning rule (mnist_jax/models/perceptron.py), in its
    multi-class and one-vs-rest forms, from zero weights, η = --lr.
(b) The same Dense(784 -> 10) layer with softmax + CCE by gradient descent:
    the normal trainer (trainer.train_and_evaluate) with the config.
Prints a markdown table and writes it to experiments/results/perceptron_rule.md.
"""
import tempfile
import time

import jax
import jax.numpy as jnp
from absl import app, flags
from ml_collections import config_flags

from experiments import report
from mnist_jax.data import pipeline, preprocess
from mnist_jax.engine import trainer
from mnist_jax.models import perceptron

_CONFIG = config_flags.DEFINE_config_file('config', 'configs/perceptron.py',
                                          'perceptron config', lock_config=False)
_EPOCHS = flags.DEFINE_integer('epochs', 5, 'passes of the perceptron rule')
_LR = flags.DEFINE_float('lr', 1.0, 'η of the perceptron rule')
_GD_EPOCHS = flags.DEFINE_integer('gd_epochs', None,
                                  'gradient-descent epochs (default: the config; 0 = skip)')
_DATA_DIR = flags.DEFINE_string('data_dir', None, 'folder with the IDX files (else the download cache, MNIST fetched on first use)')
_OUT = flags.DEFINE_string('out', 'experiments/results/perceptron_rule.md', 'table file')


def accuracy(params, images, labels) -> float:
  logits = perceptron.Perceptron().apply({'params': params}, images)
  return float(jnp.mean(jnp.argmax(logits, -1) == labels))


def run_rule(data, rule, epochs, lr, seed):
  """Trains from zero weights; returns (val acc, test acc, seconds, mistakes/epoch)."""
  x = preprocess.normalize(jnp.asarray(data.train_images))
  y = jnp.asarray(data.train_labels)
  val_x = preprocess.normalize(jnp.asarray(data.val_images))
  test_x = preprocess.normalize(jnp.asarray(data.test_images))
  params = {'dense': {'kernel': jnp.zeros((784, 10)), 'bias': jnp.zeros(10)}}
  epoch_fn = jax.jit(perceptron.perceptron_rule_epoch, static_argnames='rule')
  rng = jax.random.key(seed)
  mistakes, t0 = [], time.time()
  for e in range(epochs):
    order = jax.random.permutation(jax.random.fold_in(rng, e), len(y))
    params, m = epoch_fn(params, x[order], y[order], lr, rule=rule)
    mistakes.append(int(m))
  seconds = time.time() - t0
  val = accuracy(params, val_x, data.val_labels) if len(data.val_labels) else float('nan')
  return val, accuracy(params, test_x, data.test_labels), seconds, mistakes


def main(argv):
  del argv
  config = _CONFIG.value
  if _DATA_DIR.value:
    config.data.source, config.data.data_dir = 'idx', _DATA_DIR.value
  data = pipeline.load(config.data)
  rows = []
  for rule in ('multiclass', 'one_vs_rest'):
    val, test, seconds, mistakes = run_rule(data, rule, _EPOCHS.value, _LR.value,
                                            config.seed)
    rows.append((f'perceptron rule ({rule})', 'step', f'η={_LR.value:g}',
                 _EPOCHS.value, val, test, seconds))
    print(f'{rule}: mistakes per epoch {mistakes}', flush=True)
  gd_epochs = config.num_epochs if _GD_EPOCHS.value is None else _GD_EPOCHS.value
  if gd_epochs > 0:
    config.num_epochs = gd_epochs
    with tempfile.TemporaryDirectory() as workdir:
      summary = trainer.train_and_evaluate(config, workdir).summary
    rows.append(('gradient descent', f'softmax + {config.loss.upper()}',
                 f'{config.optimizer} η={config.learning_rate:g}', gd_epochs,
                 summary['val_accuracy'] or float('nan'), summary['test_accuracy'],
                 summary['train_time_s']))
  table = ['| training | activation / loss | update | epochs | val acc | test acc | '
           'train s |', '|---|---|---|---:|---:|---:|---:|']
  for name, act, upd, ep, val, test, sec in rows:
    table.append(f'| {name} | {act} | {upd} | {ep} | {val:.4f} | {test:.4f} | {sec:.1f} |')
  sizes = data.sizes()
  report.write_markdown(_OUT.value, [
      '# The perceptron: Rosenblatt rule vs gradient descent', '',
      f'`{report.command()}`', '',
      f'{report.machine()} Data: {sizes["train"]} train / {sizes["val"]} val / '
      f'{sizes["test"]} test images.', '', *table])


if __name__ == '__main__':
  app.run(main)
