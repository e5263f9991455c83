"""K ensemble members trained as one vmapped program vs K runs one after another.

  python -m experiments.ensembles.ensemble_speed [--config=configs/record_single.py] \\
      [--ks=1,4,8] [--train_limit=480] [--val_size=100] [--epochs=2] [--ema_decay=0]

Every side is the product's own engine (``engine.stacked.train``) on the small
MNIST fixture (the first ``--train_limit`` training images, ``--val_size`` validation
and 1,000 test images), ``--epochs`` epochs; the first epoch compiles, so a side's
per-epoch time is the median over the later epochs of metrics.jsonl's
'train_time_s' (training) and 'eval_time_s' (validation and test of the raw and
EMA weights; for an ensemble also its mean-probability metrics and every
member's ECE/NLL).

  sequential   K single runs, one after another: K x the per-epoch time of the
               config's single run (seed 0; a member's seed does not change
               what it computes, so one run is timed and multiplied)
  vectorized   one run with config.ensemble.size = K: the K members (seeds
               0..K−1, each with its own data order, augmentation and dropout)
               in one jit(scan(vmap(train_step))) (engine/stacked.py)

Ratios are taken within one run of this script. Writes a markdown table to --out.
"""
import os
import statistics
import tempfile

from absl import app, flags
from ml_collections import config_flags

from experiments import report
from mnist_jax.engine import stacked
from mnist_jax.store import workdir as workdir_lib

_CONFIG = config_flags.DEFINE_config_file('config', 'configs/record_single.py',
                                          'the member config', lock_config=False)
_KS = flags.DEFINE_list('ks', ['1', '4', '8'], 'ensemble sizes K')
_TRAIN_LIMIT = flags.DEFINE_integer('train_limit', 480, 'training images per epoch')
_EPOCHS = flags.DEFINE_integer('epochs', 2, 'epochs per side (the first compiles)')
_VAL_SIZE = flags.DEFINE_integer('val_size', 100, 'validation images')
_EMA = flags.DEFINE_float('ema_decay', None, "config.ema_decay (default: the config's)")
_DATA_DIR = flags.DEFINE_string('data_dir', 'tests/fixtures/mnist_small', 'IDX folder')
_OUT = flags.DEFINE_string('out', 'experiments/results/ensemble_speed.md', 'table file')


def per_epoch(config, k: int, root: str) -> dict:
  """Median 'train_time_s' and 'eval_time_s' over epochs 2.. of a run with K = k."""
  config = config.copy_and_resolve_references()
  config.ensemble.size = k
  workdir = os.path.join(root, f'k{k}')
  result = stacked.train([config], [workdir])[0]
  if result.error is not None:
    raise result.error
  later = workdir_lib.load_history(workdir)[1:]
  return {key: statistics.median(h[key] for h in later)
          for key in ('train_time_s', 'eval_time_s')}


def main(argv):
  del argv
  config = _CONFIG.value
  config.data.source, config.data.data_dir, config.data.download = 'idx', _DATA_DIR.value, False
  config.data.val_size, config.data.train_limit = _VAL_SIZE.value, _TRAIN_LIMIT.value
  config.num_epochs, config.write_plots, config.checkpoint_every_epochs = _EPOCHS.value, False, 0
  config.seed = 0
  if _EMA.value is not None:
    config.ema_decay = _EMA.value
  ks = [int(k) for k in _KS.value]
  with tempfile.TemporaryDirectory() as root:
    one = per_epoch(config, 1, root)
    rows = []
    for k in ks:
      vec = one if k == 1 else per_epoch(config, k, root)
      seq = {key: k * v for key, v in one.items()}
      rows.append((k, seq, vec))
      print(f"K={k}: sequential {seq['train_time_s']:.1f} + {seq['eval_time_s']:.1f} s, "
            f"vectorized {vec['train_time_s']:.1f} + {vec['eval_time_s']:.1f} s", flush=True)
  steps = _TRAIN_LIMIT.value // config.batch_size
  lines = [
      f'# Ensemble members vmapped vs one after another ({config.model.name}, '
      f'{os.path.basename(flags.FLAGS["config"].config_filename)})', '',
      f'`{report.command()}`', '',
      f'{report.machine()} Nothing else training; load average at the end '
      f'{os.getloadavg()[0]:.1f}.', '',
      f'The small MNIST fixture: {_TRAIN_LIMIT.value} training images ({steps} steps of '
      f'{config.batch_size}), {_VAL_SIZE.value} validation and 1,000 test images; median '
      'over epochs '
      f'2..{_EPOCHS.value} of the engine\'s own per-epoch times (epoch 1 compiles); '
      f'weight EMA {"off" if not config.ema_decay else config.ema_decay}. '
      'Sequential = K x one single run. See the docstring of experiments/ensembles/ensemble_speed.py.',
      '',
      '| K | sequential train s/epoch | vmapped train s/epoch | train speed-up | '
      'sequential train+eval s/epoch | vmapped train+eval s/epoch | total speed-up |',
      '|---|---|---|---|---|---|---|']
  for k, seq, vec in rows:
    seq_all, vec_all = sum(seq.values()), sum(vec.values())
    lines.append(f"| {k} | {seq['train_time_s']:.2f} | {vec['train_time_s']:.2f} | "
                 f"{seq['train_time_s'] / vec['train_time_s']:.2f}x | {seq_all:.2f} | "
                 f'{vec_all:.2f} | {seq_all / vec_all:.2f}x |')
  report.write_markdown(_OUT.value, lines)


if __name__ == '__main__':
  app.run(main)
