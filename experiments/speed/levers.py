"""The speed levers, one at a time and together: validation accuracy of the speedrun's
model after its one pass, and the multiply-accumulates it took.

  python -m experiments.speed.levers --data_dir=$MNIST_DIR \\
      [--variants=base,n27500,n27500+muon,...] [--seeds=0,1,2,3,4] \\
      [--out=experiments/results/speed_levers.md]

Each variant is configs/speedrun.py (or --config) with the overrides of its name
(``overrides_of``: 'n27500+muon' trains muon on the first 27,500 images; dotted config keys; 'whiten' is not a key: it sets config.model.whitening to the
patch-whitening filters of the run's own training split, nn/whitening.py, True for
frozen). Each seed trains once (engine/trainer.py, in this process); the table gives
the validation accuracy (the last 5,000 training images) as mean and minimum over
the seeds: the choice between variants looks at these only.

MACs per image (multiply-accumulates, by the formulas of inspection/explain.py):
  forward   Σ_conv H_out·W_out·K·K·C·F + Σ_dense in·out
  training  3 × forward (forward, ∂L/∂x, ∂L/∂W), less the first conv's ∂L/∂x (never
            needed) and, frozen, its ∂L/∂W
  to target N_train × training + 15,000 × forward × (1 + |tta|): one pass over the
            N_train images, then validation and test (each view of TTA a forward)
and XLA's cost analysis of one compiled train step per image (FLOPs of every op:
batch norm, pooling and the optimizer too, which the MACs leave out).
"""
import os
import statistics
import tempfile

from absl import app, flags, logging
from ml_collections import config_flags

from experiments import report, speed
from experiments.speed import benchmark
from mnist_jax.data import pipeline
from mnist_jax.engine import trainer
from mnist_jax.nn import whitening

_CONFIG = config_flags.DEFINE_config_file('config', 'configs/speedrun.py', 'Config file.')
_DATA_DIR = flags.DEFINE_string('data_dir', None, 'IDX folder (else the config decides).')
_VARIANTS = flags.DEFINE_list('variants', ['base'], "Variants: 'base' or 'n<N>+lever+...'.")
_SEEDS = flags.DEFINE_list('seeds', ['0', '1', '2', '3', '4'], 'Seeds to train.')
_OUT = flags.DEFINE_string('out', None, 'Markdown file to write the table to.')

LEVERS = {
    'smooth': {'loss': 'cce_smooth'},
    'bnbias4': {'norm_bias_lr_scale': 4.0},
    'bnbias16': {'norm_bias_lr_scale': 16.0},
    'muon': {'optimizer': 'muon'},
    'whiten': {'whiten': False},
    'frozen': {'whiten': True},
    'tta2': {'model.tta': ((0, 1), (0, -1))},
    'tta4': {'model.tta': ((0, 1), (0, -1), (1, 0), (-1, 0))},
    'ema': {'ema_decay': 0.99, 'model_weights': 'ema'},
    'b120': {'batch_size': 120},
    'narrow': {'model.features': (12, 24, 48)},
    'poollast': {'model.pool_first': False},
    'nosmooth': {'loss': 'cce'},
    'lr1': {'learning_rate': 1e-2},
    'lr2': {'learning_rate': 2e-2},
    'lr3': {'learning_rate': 3e-2},
    'lr4': {'learning_rate': 4e-2},
    'lr5': {'learning_rate': 5e-2},
    'lr8': {'learning_rate': 8e-2},
    'b50': {'batch_size': 50},
    'wu2': {'warmup_epochs': 0.2},
    'mom95': {'momentum': 0.95},
    'mom85': {'momentum': 0.85},
}


def overrides_of(variant: str) -> dict:
  """The overrides of a variant named 'base' or 'n<N>+lever+lever...': n<N> trains on
  the first N training images (config.data.train_limit), f<F1>-<F2>-<F3> sets the
  widths (config.model.features), each other lever as in LEVERS."""
  overrides = {}
  for part in variant.split('+'):
    if part == 'base':
      continue
    if part.startswith('n') and part[1:].isdigit():
      overrides['data.train_limit'] = int(part[1:])
    elif part.startswith('f') and part[1:].replace('-', '').isdigit():
      overrides['model.features'] = tuple(int(f) for f in part[1:].split('-'))
    else:
      overrides.update(LEVERS[part])
  return overrides


def configure(base, overrides: dict):
  """A copy of ``base`` with ``overrides`` applied; 'whiten' computes the filters."""
  config = base.copy_and_resolve_references()
  config.unlock()   # model options (whitening, tta) are SpeedNet's, not the schema's
  for key, value in overrides.items():
    if key == 'whiten':
      continue
    node, _, leaf = key.rpartition('.')
    target = config
    for part in filter(None, node.split('.')):
      target = target[part]
    target[leaf] = value
  if 'whiten' in overrides:
    data = pipeline.load(config.data)
    k, f = config.model.kernel_sizes[0], config.model.features[0]
    config.model.whitening = whitening.filters(data.train_images / 255.0, k, f)
    config.model.freeze_whitening = overrides['whiten']
  return config


def macs(config) -> dict:
  """{'forward', 'training', 'first'} MACs per image of a SpeedNet config."""
  m, h, c, layers = config.model, 28, 1, []
  for f, k, p in zip(m.features, m.kernel_sizes, m.paddings):
    h = h - k + 2 * p + 1
    layers.append(h * h * k * k * c * f)
    h, c = h // 2, f
  width = h * h * c
  for d in tuple(m.dense) + (10,):
    layers.append(width * d)
    width = d
  forward = sum(layers)
  frozen = bool(m.get('whitening')) and m.get('freeze_whitening', False)
  training = 3 * forward - layers[0] * (2 if frozen else 1)
  return {'forward': forward, 'training': training}


def run(config, seeds) -> list:
  """(val accuracy, images trained) per seed."""
  rows = []
  for seed in seeds:
    config.seed = seed
    with tempfile.TemporaryDirectory(prefix='speed_lever_') as workdir:
      summary = trainer.train_and_evaluate(config, workdir).summary
    rows.append(summary['val_accuracy'])
    print(f'  seed {seed}: val {rows[-1]:.4f}', flush=True)
  return rows


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  base = _CONFIG.value
  base.data.val_size = speed.VAL_SIZE
  if _DATA_DIR.value:
    base.data.source, base.data.download = 'idx', False
    base.data.data_dir = os.path.abspath(_DATA_DIR.value)
  names = _VARIANTS.value
  seeds = [int(s) for s in _SEEDS.value]
  lines = [f'# Speed levers on {flags.FLAGS["config"].config_filename}, {len(seeds)} seeds',
           '', f'`{report.command()}`', '', report.machine(), '',
           '| variant | overrides | val acc. mean | val acc. min | MACs/image fwd | '
           'MACs/image train | MACs to target (G) | XLA FLOP/image, train step |',
           '|---|---|---|---|---|---|---|---|']
  for name in names:
    overrides = overrides_of(name)
    print(name, overrides, flush=True)
    config = configure(base, overrides)
    val = run(config, seeds)
    n_train = config.data.train_limit or 55000
    cost = macs(config)
    views = 1 + len(config.model.get('tta', ()))
    total = (n_train * cost['training'] + 15000 * cost['forward'] * views) / 1e9
    shown = ', '.join(f'{k}={v}' for k, v in overrides.items()) or '(configs/speedrun.py)'
    lines.append(f'| {name} | {shown} | {statistics.mean(val):.4f} | {min(val):.4f} | '
                 f"{cost['forward'] / 1e6:.2f} M | {cost['training'] / 1e6:.2f} M | "
                 f"{total:.0f} | {benchmark.model_cost(config)['train_flops'] / 1e6:.2f} M |")
    print(lines[-1], flush=True)
  report.write_markdown(_OUT.value, lines)


if __name__ == '__main__':
  app.run(main)
