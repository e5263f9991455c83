"""Is the speedrun's accuracy a lucky draw? configs/speedrun.py over several seeds.

  python experiments/speed/speedrun_seeds.py --data_dir=$MNIST_DIR \
      [--seeds=0,1,2,3,4] [--out=experiments/results/benchmark_speedrun_seeds.md]

Each seed trains the config once with ``mnist_jax.engine.driver`` (in this process) and
reports, after the last epoch, the validation accuracy (the last 5,000 train
images, by which the config was chosen) and the test accuracy, then the mean
and the minimum over seeds. The seed changes the initialization, the batch
order and dropout/augmentation draws; the data split stays fixed. Times here
are indicative only (one process: later seeds skip the imports); time the
speedrun with experiments/speed/benchmark.py.
"""
import os
import statistics
import sys
import tempfile
import time

from absl import app, flags, logging
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import hardware  # pylint: disable=g-import-not-at-top,wrong-import-position
from mnist_jax.engine import driver  # pylint: disable=g-import-not-at-top,wrong-import-position

FLAGS = flags.FLAGS


def run_seeds(config, seeds) -> list:
  """One training per seed; rows of {'seed', 'val', 'test', 'epochs', 'wall_s'}."""
  rows = []
  for seed in seeds:
    config.seed = seed
    with tempfile.TemporaryDirectory(prefix='speedrun_seed_') as workdir:
      t = time.perf_counter()
      summary = driver.train_and_evaluate(config, workdir)
    rows.append({'seed': seed, 'val': summary['val_accuracy'],
                 'test': summary['test_accuracy'], 'epochs': summary['epochs'],
                 'wall_s': time.perf_counter() - t})
    print(f"seed {seed}: val {rows[-1]['val']:.4f} test {rows[-1]['test']:.4f}", flush=True)
  return rows


def report(rows, command: str, target: float = 0.99) -> str:
  """A markdown table of the seeds with the mean and minimum rows."""
  lines = ['| seed | val acc. | test acc. | epochs | wall (s) |', '|---|---|---|---|---|']
  lines += [f"| {r['seed']} | {r['val']:.4f} | {r['test']:.4f} | {r['epochs']} | "
            f"{r['wall_s']:.1f} |" for r in rows]
  for name, fn in (('mean', statistics.mean), ('min', min)):
    lines.append(f"| **{name}** | {fn(r['val'] for r in rows):.4f} | "
                 f"**{fn(r['test'] for r in rows):.4f}** | | |")
  hits = sum(r['test'] >= target for r in rows)
  return '\n'.join([f'`{command}`', '', f'Hardware: {hardware.describe()}.', '',
                    *lines, '', f'{hits}/{len(rows)} seeds reach >= {100 * target:g} % '
                    'test accuracy.', ''])


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # the driver's and orbax's per-epoch INFO lines
  config = FLAGS.config
  if FLAGS.data_dir:
    config.data.source, config.data.download = 'idx', False
    config.data.data_dir = os.path.abspath(FLAGS.data_dir)
  rows = run_seeds(config, [int(s) for s in FLAGS.seeds])
  text = report(rows, ' '.join(['python', 'experiments/speed/speedrun_seeds.py'] + sys.argv[1:]))
  print(text)
  if FLAGS.out:
    with open(FLAGS.out, 'w') as f:
      f.write(f'# Speedrun over {len(rows)} seeds ({time.strftime("%Y-%m-%d")})\n\n{text}')


if __name__ == '__main__':
  config_flags.DEFINE_config_file('config', 'configs/speedrun.py', 'Config file.')
  flags.DEFINE_string('data_dir', None, 'IDX folder (else the config decides).')
  flags.DEFINE_list('seeds', ['0', '1', '2', '3', '4'], 'Seeds to train.')
  flags.DEFINE_string('out', None, 'Markdown file to write the table to.')
  app.run(main)
