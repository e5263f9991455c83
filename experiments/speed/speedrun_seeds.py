"""Is the speedrun's accuracy a lucky draw? configs/speedrun.py over several seeds.

  python -m experiments.speed.speedrun_seeds --data_dir=$MNIST_DIR \\
      [--seeds=0,1,2,3,4] [--out=experiments/results/benchmark_speedrun_seeds.md]
  python -m experiments.speed.speedrun_seeds --data_dir=$MNIST_DIR \\
      --config.model.conv_impl=shift      # a variant: any --config.<key>=<value>

Each seed trains the config once with ``mnist_jax.engine.trainer`` (in this process) and
reports, after the last epoch, the validation accuracy (the last 5,000 training
images, held out here as experiments.speed.VAL_SIZE; the config was chosen by them)
and the test accuracy, then the mean and the minimum over seeds. The seed changes the initialization, the batch
order and dropout/augmentation draws; the data split stays fixed. Times here
are indicative only (one process: later seeds skip the imports); time the
speedrun with experiments/speed/benchmark.py. The validation columns are what
a choice between variants may look at; the test columns are reported only.
"""
import os
import statistics
import tempfile
import time

from absl import app, flags, logging
from ml_collections import config_flags

from experiments import report, speed
from mnist_jax.engine import trainer

_CONFIG = config_flags.DEFINE_config_file('config', 'configs/speedrun.py', 'Config file.')
_DATA_DIR = flags.DEFINE_string('data_dir', None, 'IDX folder (else the config decides).')
_SEEDS = flags.DEFINE_list('seeds', ['0', '1', '2', '3', '4'], 'Seeds to train.')
_OUT = flags.DEFINE_string('out', None, 'Markdown file to write the table to.')


def run_seeds(config, seeds) -> list:
  """One training per seed; rows of {'seed', 'val', 'test', 'epochs', 'wall_s'}."""
  rows = []
  for seed in seeds:
    config.seed = seed
    with tempfile.TemporaryDirectory(prefix='speedrun_seed_') as workdir:
      t = time.perf_counter()
      summary = trainer.train_and_evaluate(config, workdir).summary
    rows.append({'seed': seed, 'val': summary['val_accuracy'],
                 'test': summary['test_accuracy'], 'epochs': summary['epochs'],
                 'wall_s': time.perf_counter() - t})
    print(f"seed {seed}: val {rows[-1]['val']:.4f} test {rows[-1]['test']:.4f}", flush=True)
  return rows


def table(rows, target: float = 0.99) -> list:
  """The markdown table of the seeds with the mean and minimum rows."""
  lines = ['| seed | val acc. | test acc. | epochs | wall (s) |', '|---|---|---|---|---|']
  lines += [f"| {r['seed']} | {r['val']:.4f} | {r['test']:.4f} | {r['epochs']} | "
            f"{r['wall_s']:.1f} |" for r in rows]
  for name, fn in (('mean', statistics.mean), ('min', min)):
    lines.append(f"| **{name}** | {fn(r['val'] for r in rows):.4f} | "
                 f"**{fn(r['test'] for r in rows):.4f}** | | |")
  hits = sum(r['test'] >= target for r in rows)
  return lines + ['', f'{hits}/{len(rows)} seeds reach >= {100 * target:g} % test accuracy.']


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # the trainer's and orbax's per-epoch INFO lines
  config = _CONFIG.value
  config.data.val_size = speed.VAL_SIZE
  if _DATA_DIR.value:
    config.data.source, config.data.download = 'idx', False
    config.data.data_dir = os.path.abspath(_DATA_DIR.value)
  rows = run_seeds(config, [int(s) for s in _SEEDS.value])
  lines = [f'# {flags.FLAGS["config"].config_filename} over {len(rows)} seeds', '',
           f'`{report.command()}`', '', report.machine(), '', *table(rows)]
  report.write_markdown(_OUT.value, lines)


if __name__ == '__main__':
  app.run(main)
