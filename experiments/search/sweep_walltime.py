"""Wall-clock of a whole sweep: one trial after another vs --vectorize, each
without and with the persistent compilation cache (store/compile_cache.py).

  python -m experiments.search.sweep_walltime --data_dir=$MNIST_DIR [--epochs=1] \\
      [--train_limit=0]

Runs the config's own ``get_hyper`` sweep (configs/lenet.py: 3 η x 2 dropout p,
6 trials, one seed) twice in fresh work directories, as a user would:

  python -m mnist_jax.sweep --config=C --workdir=W [--vectorize] \\
      --config.num_epochs=E --config.data.source=idx --config.data.data_dir=D \\
      --config.write_plots=False

with ``--compilation_cache=off``, then with an empty cache directory ("cold":
the first trial compiles and writes, later trials load), then again with that
directory ("warm": a second sweep on the same machine), and times each process
from start to exit (start-up, data loading, every compilation, training,
evaluation and checkpoints included). Plots are off in
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

from experiments import report

_CONFIG = flags.DEFINE_string('config', 'configs/lenet.py', 'config file with get_hyper')
_DATA_DIR = flags.DEFINE_string('data_dir', os.environ.get('MNIST_DIR'),
                                 'Folder with the four MNIST IDX files (default: $MNIST_DIR)')
_EPOCHS = flags.DEFINE_integer('epochs', 1, 'epochs per trial')
_TRAIN_LIMIT = flags.DEFINE_integer('train_limit', 0, 'training images per trial (0: all)')
_OUT = flags.DEFINE_string('out', 'experiments/results/sweep_walltime.md', 'table file')


# (row name, --vectorize, which cache): 'off', or the name of a cache directory.
RUNS = (('one trial after another, no cache', False, 'off'),
        ('one trial after another, empty cache (cold)', False, 'sequential'),
        ('one trial after another, that cache again (warm)', False, 'sequential'),
        ('--vectorize, no cache', True, 'off'),
        ('--vectorize, empty cache (cold)', True, 'vectorized'),
        ('--vectorize, that cache again (warm)', True, 'vectorized'))


def run_sweep(workdir: str, vectorize: bool, cache: str) -> float:
  """Seconds from launching the sweep process to its exit."""
  cmd = [sys.executable, '-m', 'mnist_jax.sweep', f'--config={_CONFIG.value}',
         f'--workdir={workdir}', f'--config.num_epochs={_EPOCHS.value}',
         '--config.data.source=idx', f'--config.data.data_dir={_DATA_DIR.value}',
         f'--config.data.train_limit={_TRAIN_LIMIT.value}', '--config.write_plots=False',
         f'--compilation_cache={cache}'] + (['--vectorize'] if vectorize else [])
  print('$', ' '.join(shlex.quote(c) for c in cmd), flush=True)
  start = time.perf_counter()
  subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
  return time.perf_counter() - start


def best_val(workdir: str) -> dict:
  """{trial directory name: best val accuracy}; a sequential sweep (a study) numbers
  its trials and names the directory in 'dir', a vectorized one names them in 'trial'."""
  with open(os.path.join(workdir, 'results.csv')) as f:
    return {r.get('dir') or r['trial']: float(r['best_val_accuracy'])
            for r in csv.DictReader(f)}


def main(argv):
  del argv
  if not _DATA_DIR.value:
    raise app.UsageError('no MNIST IDX folder: pass --data_dir=DIR or set $MNIST_DIR')
  with tempfile.TemporaryDirectory() as tmp:
    seconds, acc = {}, {}
    for i, (name, vectorize, cache) in enumerate(RUNS):
      workdir = os.path.join(tmp, f'sweep{i}')
      seconds[name] = run_sweep(workdir, vectorize,
                                cache if cache == 'off' else os.path.join(tmp, cache))
      acc[name] = best_val(workdir)
  names = [r[0] for r in RUNS]
  base = seconds[names[0]]
  trials = sorted(acc[names[0]])
  gap = max(abs(acc[names[0]][t] - acc[n][t]) for t in trials for n in names)
  lines = [
      '# A whole sweep: one trial after another vs --vectorize, without and with the '
      'compilation cache', '',
      f'`{report.command()}`', '',
      f'{report.machine()} Load average at the end {os.getloadavg()[0]:.1f}.', '',
      f'`{_CONFIG.value}`, its get_hyper sweep ({len(trials)} trials), {_EPOCHS.value} '
      f'epoch(s) per trial on the IDX files (train_limit={_TRAIN_LIMIT.value}, 0 = all); '
      'wall-clock of each `python -m mnist_jax.sweep` process (start-up, data, '
      'compilation, training, evaluation, checkpoints), one after the other in this order.',
      '', '| sweep | wall-clock (s) | speed-up |', '|---|---|---|']
  lines += [f'| {n} | {seconds[n]:.1f} | {base / seconds[n]:.2f}x |' for n in names]
  lines += ['', '| trial | ' + ' | '.join(f'best val accuracy, run {i + 1}'
                                          for i in range(len(names))) + ' |',
            '|---|' + '---|' * len(names)]
  lines += [f'| {t} | ' + ' | '.join(f'{acc[n][t]:.4f}' for n in names) + ' |'
            for t in trials]
  lines += ['', f'Largest per-trial difference in best validation accuracy: {gap:.4f} '
            '(float rounding between the vmapped and the single-trial program; a cache hit '
            'runs the executable a compilation would give).']
  report.write_markdown(_OUT.value, lines)


if __name__ == '__main__':
  app.run(main)
