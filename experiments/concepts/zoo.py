"""Trains the architecture zoo (LeNet-5 ... EfficientNet) and tabulates it.

  python -m experiments.concepts.zoo --data_dir=$MNIST_DIR          # all, default configs
  python -m experiments.concepts.zoo --models=resnet,densenet --epochs=2      # a subset, shorter
  python -m experiments.concepts.zoo --models=alexnet --epochs=1 --train_limit=2000   # smoke test

Each model trains with its ``configs/<config>.py`` through ``engine.stacked.train``
(its plots then drawn by ``inspection.figures`` if config.write_plots, as mnist_jax.main).
Results accumulate in ``<out>.json`` (a later run of some models replaces only
their rows) and are rendered to ``<out>`` (markdown: year, parameters,
multiply-accumulates per image from ``mnist_jax.inspection.explain``, seconds per epoch
(median over epochs 2..E: epoch 1 includes compilation),
images/s, epochs, test accuracy) and ``<out minus .md>.png`` (test accuracy
against parameters, log scale).
"""
import json
import os
import tempfile
import time

import numpy as np
from absl import app, flags

from experiments import hardware, report
from mnist_jax import cli, train
from mnist_jax.config import files as config_files
from mnist_jax.engine import stacked
from mnist_jax.store import workdir as workdir_lib
from mnist_jax.inspection import explain, figures

# key -> (config file, label, year, key innovation[, config overrides])
ZOO = {
    'lenet5': ('lenet.py', 'LeNet-5 (modern)', 1998, 'conv + subsampling, end to end'),
    'lenet_classic': ('lenet_classic.py', 'LeNet-5 (classic)', 1998,
                      'tanh, avg-pool, C3 table'),
    'alexnet': ('alexnet.py', 'AlexNet', 2012, 'ReLU, dropout, overlapping pool, LRN'),
    'vgg': ('vgg.py', 'VGG-16 (BN)', 2014, 'only 3x3 convs, depth'),
    'googlenet': ('googlenet.py', 'GoogLeNet', 2014, 'Inception modules, 1x1 reductions'),
    'resnet': ('resnet.py', 'ResNet-18 style', 2015, 'residual y = F(x) + x'),
    'densenet': ('densenet.py', 'DenseNet-BC', 2017, 'x_l = H_l([x_0..x_{l-1}])'),
    'efficientnet': ('efficientnet.py', 'EfficientNet-B0', 2019,
                     'compound scaling, MBConv + SE'),
    # Longer runs of the two best 10-epoch models by validation accuracy: VGG with
    # stronger augmentation, DenseNet with its own recipe for twice as long.
    'vgg_long': ('vgg.py', 'VGG-16 (BN), 30 epochs', 2014, 'same net, longer',
                 {'num_epochs': 30, 'augment.translate': 2.0, 'augment.scale': 0.1}),
    'densenet_long': ('densenet.py', 'DenseNet-BC, 20 epochs', 2017, 'same net, longer',
                      {'num_epochs': 20}),
}

_MODELS = flags.DEFINE_list('models', list(ZOO), f'Subset of {", ".join(ZOO)}.')
_EPOCHS = flags.DEFINE_integer('epochs', 0, 'Override num_epochs (0 = the config\'s).')
_TRAIN_LIMIT = flags.DEFINE_integer('train_limit', 0, 'Use only N training images (0 = all).')
_DATA_DIR = flags.DEFINE_string('data_dir', None, 'Folder with the IDX files (else the download cache, MNIST fetched on first use).')
_OUT = flags.DEFINE_string('out', os.path.join(report.RESULTS, 'zoo.md'),
                           'Markdown table; <out>.json and .png are written beside it.')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Root for the runs (default: a temp dir).')


def config_for(key):
  """The model's default config with the command-line overrides applied."""
  config = config_files.load(os.path.join(report.ROOT, 'configs', ZOO[key][0]))
  for path, value in _overrides(key).items():
    *parents, leaf = path.split('.')
    node = config
    for p in parents:
      node = node[p]
    node[leaf] = value
  if _EPOCHS.value:
    config.num_epochs = _EPOCHS.value
  if _TRAIN_LIMIT.value:
    config.data.train_limit = _TRAIN_LIMIT.value
  if _DATA_DIR.value:
    config.data.source, config.data.data_dir = 'idx', _DATA_DIR.value
  return config


def _overrides(key) -> dict:
  return ZOO[key][4] if len(ZOO[key]) > 4 else {}


def _config_label(key) -> str:
  """`configs/<name>.py` plus its overrides as command-line flags."""
  flags_ = ' '.join(f'--config.{k}={v}' for k, v in _overrides(key).items())
  return f'configs/{ZOO[key][0]}' + (f' {flags_}' if flags_ else '')


def cost(config):
  """(parameters, MACs per 28x28 image) from the model explainer."""
  rows = explain.explain(train.build_model(config), (1, 28, 28, 1))
  return sum(r.params for r in rows), sum(r.macs for r in rows)


def run_one(key, workdir):
  config = config_for(key)
  params, macs = cost(config)
  outcome = stacked.train([config], [os.path.join(workdir, key)])[0]
  if outcome.error is not None:
    raise outcome.error
  s = outcome.summary
  if config.write_plots:  # the engine draws none
    figures.write_all(os.path.join(workdir, key), config, outcome.state, outcome.data)
  times = [h['train_time_s'] for h in workdir_lib.load_history(os.path.join(workdir, key))]
  epoch_s = float(np.median(times[1:] or times))   # epoch 1 includes the compile
  return {
      'key': key, 'model': ZOO[key][1], 'year': ZOO[key][2], 'innovation': ZOO[key][3],
      'config': _config_label(key), 'params': params, 'macs': macs,
      'epochs': s['epochs'], 'train_images': config.data.train_limit or 'all',
      'epoch_s': epoch_s, 'images_per_s': s['images_per_s'],
      'val_accuracy': s['val_accuracy'], 'test_accuracy': s['test_accuracy'],
      'hardware': f"{hardware.describe()}; {time.strftime('%Y-%m-%d')}",
      'command': report.command(),
  }


def render(results, md_path):
  """Writes the markdown table and the accuracy-vs-parameters plot."""
  rows = sorted(results.values(), key=lambda r: (r['year'], r['key']))
  machines = sorted({r['hardware'] for r in rows})
  lines = ['| model | year | key innovation | config | parameters | MACs / image | '
           's / epoch | images/s | epochs | train images | val acc. | test acc. | machine |',
           '|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|']
  for r in rows:
    lines.append(
        f"| {r['model']} | {r['year']} | {r['innovation']} | `{r['config']}` | "
        f"{r['params']:,} | {r['macs'] / 1e6:.2f} M | {r['epoch_s']:.0f} | "
        f"{r['images_per_s']:,.0f} | {r['epochs']} | {r['train_images']} | "
        f"{100 * r['val_accuracy']:.2f} % | {100 * r['test_accuracy']:.2f} % | "
        f"[{machines.index(r['hardware']) + 1}] |")
  commands = sorted({r['command'] for r in rows})
  lines += ['', 'Machines and dates (times compare only within one machine):']
  lines += [f'- [{i + 1}] {m}' for i, m in enumerate(machines)]
  lines += ['', 'Commands:'] + [f'- `{c}`' for c in commands]
  report.write_markdown(md_path, lines)
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(7, 4.5))
  for r in rows:
    ax.scatter(r['params'], 100 * r['test_accuracy'])
    ax.annotate(f"{r['model']} ({r['year']})", (r['params'], 100 * r['test_accuracy']),
                textcoords='offset points', xytext=(4, 4), fontsize=8)
  ax.set_xscale('log')
  ax.set_xlabel('parameters (log scale)')
  ax.set_ylabel('test accuracy (%)')
  ax.set_title('MNIST architecture zoo: accuracy vs. parameters')
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(os.path.splitext(md_path)[0] + '.png', dpi=120)
  plt.close(fig)


def main(argv):
  del argv
  unknown = [m for m in _MODELS.value if m not in ZOO]
  if unknown:
    raise app.UsageError(f'unknown --models {unknown}; choose from {", ".join(ZOO)}')
  json_path = os.path.splitext(_OUT.value)[0] + '.json'
  results = {}
  if os.path.exists(json_path):
    with open(json_path) as f:
      results = json.load(f)
  cli.quiet_logs()  # orbax's INFO lines (and the libtpu probe)
  workdir = _WORKDIR.value or tempfile.mkdtemp(prefix='zoo_')
  os.makedirs(os.path.dirname(os.path.abspath(_OUT.value)), exist_ok=True)
  for key in _MODELS.value:
    results[key] = run_one(key, workdir)
    with open(json_path, 'w') as f:       # after every model: a crash keeps the rest
      json.dump(results, f, indent=1)
    render(results, _OUT.value)


if __name__ == '__main__':
  app.run(main)
