"""Validation accuracy of variants of a config over seeds (selection without the test set).

  python experiments/speed/speedrun_variants.py --data_dir=$MNIST_DIR \
      --variants='model.conv_impl=shift;model.conv_impl=shift,batch_size=48' [--seeds=0,1,2]

Each variant (';'-separated, each a ','-separated list of key=value overrides of
--config, read as experiments/speed/benchmark.py's --set) trains once per seed with
``mnist_jax.engine.driver`` and reports only the validation accuracy (the last
5,000 train images) after its last epoch: the test set is not looked at, so the
table can choose a variant. Writes a markdown table to --out.
"""
import os
import statistics
import sys
import tempfile
import time

from absl import app, flags, logging

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # hardware
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # benchmark, beside this file
import hardware  # pylint: disable=g-import-not-at-top,wrong-import-position
from benchmark import load_config  # pylint: disable=g-import-not-at-top,wrong-import-position
from mnist_jax.engine import driver  # pylint: disable=g-import-not-at-top,wrong-import-position

FLAGS = flags.FLAGS


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  data = ([f'data.data_dir={os.path.abspath(FLAGS.data_dir)}', 'data.source=idx',
           'data.download=False'] if FLAGS.data_dir else [])
  seeds = [int(s) for s in FLAGS.seeds]
  rows = ['| variant | ' + ' | '.join(f'val seed {s}' for s in seeds) + ' | mean | min |',
          '|---|' + '---|' * (len(seeds) + 2)]
  for variant in FLAGS.variants.split(';'):
    vals, overrides = [], [p.strip() for p in variant.split(',') if p.strip()]
    for seed in seeds:
      config = load_config(FLAGS.config, overrides + data + [f'seed={seed}'])
      with tempfile.TemporaryDirectory(prefix='variant_') as workdir:
        vals.append(driver.train_and_evaluate(config, workdir)['val_accuracy'])
    rows.append(f"| `{variant or '(config)'}` | " + ' | '.join(f'{v:.4f}' for v in vals)
                + f' | {statistics.mean(vals):.4f} | {min(vals):.4f} |')
    print(rows[-1], flush=True)
  mnist_dir = os.environ.get('MNIST_DIR')
  shown = [f'--data_dir=$MNIST_DIR' if mnist_dir and a.startswith('--data_dir=') and
           os.path.abspath(a.split('=', 1)[1]) == os.path.abspath(mnist_dir) else a
           for a in sys.argv[1:]]
  command = ' '.join(['python', 'experiments/speed/speedrun_variants.py'] + shown)
  text = (f'# Validation accuracy of config variants ({time.strftime("%Y-%m-%d")})\n\n'
          f'`{command}`\n\nHardware: {hardware.describe()}.\n\n' + '\n'.join(rows) + '\n')
  print(text)
  if FLAGS.out:
    with open(FLAGS.out, 'w') as f:
      f.write(text)


if __name__ == '__main__':
  flags.DEFINE_string('config', 'configs/speedrun.py', 'Config file.')
  flags.DEFINE_string('data_dir', None, 'IDX folder (else the config decides).')
  flags.DEFINE_string('variants', '', "';'-separated variants of ','-separated key=value.")
  flags.DEFINE_list('seeds', ['0', '1', '2'], 'Seeds per variant.')
  flags.DEFINE_string('out', None, 'Markdown file to write the table to.')
  app.run(main)
