"""Wall-clock of a whole sweep: ``mnist_jax.sweep`` one trial after another vs --vectorize.

  python experiments/sweep_walltime.py --data_dir=../shared/data/mnist [--epochs=1]

Runs the config's own ``get_hyper`` sweep (configs/lenet.py: 3 η x 2 dropout p,
6 trials, one seed) twice in fresh work directories, as a user would:

  python -m mnist_jax.sweep --config=C --workdir=W [--vectorize] \
      --config.num_epochs=E --config.data.source=idx --config.data.data_dir=D \
      --config.write_plots=False

and times each process from start to exit (start-up, data loading, every
compilation, training, evaluation and checkpoints included). Plots are off in
both (the sweep draws them after training, for either mode; that is not what is
timed here). It then compares each trial's best
validation accuracy between the two runs (they train the same function).
"""
import csv
import os
import shlex
import subprocess
import sys
import tempfile
import time

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hardware  # pylint: disable=g-import-not-at-top,wrong-import-position
import report  # pylint: disable=g-import-not-at-top,wrong-import-position

_CONFIG = flags.DEFINE_string('config', 'configs/lenet.py', 'config file with get_hyper')
_DATA_DIR = flags.DEFINE_string('data_dir', '../shared/data/mnist', 'IDX folder')
_EPOCHS = flags.DEFINE_integer('epochs', 1, 'epochs per trial')
_OUT = flags.DEFINE_string('out', 'experiments/results/sweep_walltime.md', 'table file')


def run_sweep(workdir: str, vectorize: bool) -> float:
  """Seconds from launching the sweep process to its exit."""
  cmd = [sys.executable, '-m', 'mnist_jax.sweep', f'--config={_CONFIG.value}',
         f'--workdir={workdir}', f'--config.num_epochs={_EPOCHS.value}',
         '--config.data.source=idx', f'--config.data.data_dir={_DATA_DIR.value}',
         '--config.write_plots=False'] + (['--vectorize'] if vectorize else [])
  print('$', ' '.join(shlex.quote(c) for c in cmd), flush=True)
  start = time.perf_counter()
  subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
  return time.perf_counter() - start


def best_val(workdir: str) -> dict:
  with open(os.path.join(workdir, 'results.csv')) as f:
    return {r['trial']: float(r['best_val_accuracy']) for r in csv.DictReader(f)}


def main(argv):
  del argv
  with tempfile.TemporaryDirectory() as tmp:
    dirs = {m: os.path.join(tmp, m) for m in ('sequential', 'vectorized')}
    seconds = {m: run_sweep(d, m == 'vectorized') for m, d in dirs.items()}
    acc = {m: best_val(d) for m, d in dirs.items()}
  trials = sorted(acc['sequential'])
  gap = max(abs(acc['sequential'][t] - acc['vectorized'][t]) for t in trials)
  lines = [
      '# A whole sweep: one trial after another vs --vectorize', '',
      f'`python {" ".join(shlex.quote(a) for a in sys.argv)}`', '',
      f'Hardware: {hardware.describe()}; load average at the end '
      f'{os.getloadavg()[0]:.1f}.', '',
      f'`{_CONFIG.value}`, its get_hyper sweep ({len(trials)} trials), {_EPOCHS.value} '
      'epoch(s) per trial on the IDX files; wall-clock of each `python -m mnist_jax.sweep` '
      'process (start-up, data, compilation, training, evaluation, checkpoints).', '',
      '| sweep | wall-clock (s) | speed-up |', '|---|---|---|',
      f"| one trial after another | {seconds['sequential']:.1f} | 1.00x |",
      f"| --vectorize | {seconds['vectorized']:.1f} | "
      f"{seconds['sequential'] / seconds['vectorized']:.2f}x |", '',
      '| trial | best val accuracy, sequential | best val accuracy, vectorized |',
      '|---|---|---|']
  lines += [f"| {t} | {acc['sequential'][t]:.4f} | {acc['vectorized'][t]:.4f} |"
            for t in trials]
  lines += ['', f'Largest per-trial difference in best validation accuracy: {gap:.4f} '
            '(float rounding between the vmapped and the single-trial program).']
  report.write_markdown(_OUT.value, lines)


if __name__ == '__main__':
  app.run(main)
