"""A single run (K = 1) of an older commit and of this tree, side by side.

  python experiments/speed/driver_k1_speed.py --data_dir=$MNIST_DIR \
      [--old=8c14d06] [--runs=3] [--configs=lenet,speedrun] [--epochs=3] [--out=FILE]

For each config, fresh processes of ``python -m mnist_jax.main`` alternate
between the old tree (``git archive <old>`` into a temporary folder, e.g. the
commit before the one-driver engine, or the one before the one evaluation
pass) and this one, on the same data, seed and flags. Per process it reads
summary.json and metrics.jsonl:
the wall time from start to summary, and the steady-state images/s (median of
the epochs after the first, which includes compilation). The ratio new / old of
each median is the answer; 1.00 means "exactly as fast".
"""
import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, 'experiments'))
import hardware  # pylint: disable=wrong-import-position
import report  # pylint: disable=wrong-import-position


def old_tree(commit: str, into: str) -> str:
  """The package as it was at ``commit``, unpacked in ``into``."""
  archive = os.path.join(into, 'old.tar')
  subprocess.run(['git', 'archive', '-o', archive, commit], cwd=ROOT, check=True)
  with tarfile.open(archive) as t:
    t.extractall(os.path.join(into, 'old'))
  return os.path.join(into, 'old')


def one_run(tree: str, config: str, data_dir: str, epochs: int, workdir: str) -> dict:
  args = [sys.executable, '-m', 'mnist_jax.main', f'--config=configs/{config}.py',
          f'--workdir={workdir}', '--config.data.source=idx',
          f'--config.data.data_dir={os.path.abspath(data_dir)}',
          f'--config.num_epochs={epochs}', '--config.write_plots=False']
  env = dict(os.environ, PYTHONPATH=tree)
  t0 = time.time()
  subprocess.run(args, cwd=tree, env=env, check=True, capture_output=True)
  wall = time.time() - t0
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    history = [json.loads(line) for line in f]
  with open(os.path.join(workdir, 'summary.json')) as f:
    summary = json.load(f)   # test accuracy: the last weights', wherever it is recorded
  rates = [h['images_per_s'] for h in history[1:]] or [history[0]['images_per_s']]
  return {'wall_s': wall, 'images_per_s': float(np.median(rates)),
          'test_accuracy': summary['test_accuracy']}


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--data_dir', required=True)
  parser.add_argument('--old', default='8c14d06')
  parser.add_argument('--runs', type=int, default=3)
  parser.add_argument('--configs', default='lenet,speedrun')
  parser.add_argument('--epochs', type=int, default=3)
  parser.add_argument('--out', default=os.path.join(ROOT, 'experiments', 'results',
                                                    'driver_k1_speed.md'))
  parser.add_argument('--title', default='A single run (K = 1): the old loop vs the one driver')
  a = parser.parse_args()
  rows = []
  with tempfile.TemporaryDirectory() as tmp:
    trees = {'old': old_tree(a.old, tmp), 'new': ROOT}
    for config in a.configs.split(','):
      epochs = 1 if config == 'speedrun' else a.epochs
      got = {'old': [], 'new': []}
      for r in range(a.runs):
        for name, tree in trees.items():
          got[name].append(one_run(tree, config, a.data_dir, epochs,
                                   os.path.join(tmp, f'{config}-{name}-{r}')))
          print(config, name, got[name][-1], flush=True)
      med = {n: {k: float(np.median([g[k] for g in v])) for k in v[0]} for n, v in got.items()}
      rows.append(f"| `configs/{config}.py` | {epochs} | {med['old']['wall_s']:.1f} | "
                  f"{med['new']['wall_s']:.1f} | {med['new']['wall_s'] / med['old']['wall_s']:.3f} | "
                  f"{med['old']['images_per_s']:,.0f} | {med['new']['images_per_s']:,.0f} | "
                  f"{med['new']['images_per_s'] / med['old']['images_per_s']:.3f} | "
                  f"{med['old']['test_accuracy']:.4f} / {med['new']['test_accuracy']:.4f} |")
  shown = ('$MNIST_DIR' if os.environ.get('MNIST_DIR') and os.path.abspath(
      os.environ['MNIST_DIR']) == os.path.abspath(a.data_dir) else a.data_dir)
  report.write_markdown(a.out, [
      f'# {a.title}', '',
      f'`python {os.path.relpath(os.path.abspath(__file__), ROOT)} --data_dir={shown} --old={a.old} '
      f'--runs={a.runs} --configs={a.configs} --epochs={a.epochs} '
      f'--out={os.path.relpath(a.out, ROOT)} --title="{a.title}"`', '',
      f'Machine: {hardware.describe()}; {time.strftime("%Y-%m-%d")}. Medians of {a.runs} fresh processes each, old and new '
      'alternating. images/s: steady state (median of epochs 2.., or epoch 1 for a '
      'one-epoch run, compile included).', '',
      '| config | epochs | old wall (s) | new wall (s) | new/old | old img/s | new img/s | '
      'new/old | test acc old / new |', '|---|---|---|---|---|---|---|---|---|'] + rows)


if __name__ == '__main__':
  main()
