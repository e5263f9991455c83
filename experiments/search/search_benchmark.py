"""Grid vs ASHA vs TPE on a LeNet search space: best validation accuracy and epochs trained.

  python -m experiments.search.search_benchmark --data_dir=$MNIST_DIR \\
      [--train_limit=10000 --epochs=9] [--strategies=grid,asha,tpe,tpe_asha,grid_vec4] \\
      [--seeds=0,1,2]

The space (12 points): η ∈ {5e-4, 1e-3, 2e-3, 4e-3} x dropout p ∈ {0, 0.25, 0.5}
on configs/lenet.py (its recipe: Adam, warmup + cosine over the epochs, light
augmentation), each trial on the first ``train_limit`` training images for
``epochs`` epochs, validated on the last 5,000 of the training set. Each
strategy is one study (search/study.py) in its own SQLite file, run by one
worker in this process, so its decisions are reproducible:

  grid       the 12 points, every epoch (GridSampler, no pruner)
  asha       the same 12 points with --pruner=asha (min 1 epoch, reduction 3)
  tpe        TPE for 40 % of the grid's trials (5), no pruner
  tpe_asha   TPE for 12 trials with ASHA
  grid_vec4  the grid, each worker pop taking 4 trials and training them as one
             vmapped group (--vectorize_trials=4): the grid's epochs, its wall-clock

Every strategy but the grid (whose epochs and best do not depend on the order)
runs once per --seeds value (the sampler seed: the grid's queue order, TPE's
draws), since an asynchronous pruner's savings depend on the order trials come in.

Reported: the best validation accuracy any trial reached (the number a search
selects on), the test accuracy at that trial's best epoch, the epochs trained in
total and as a share of the grid's, and the wall-clock (a shared CPU: an upper
bound). Results merge into experiments/results/search_benchmark.{json,md}, so
strategies can be run one at a time.
"""
import json
import os
import tempfile
import time

from absl import app, flags

from experiments import hardware, report
from mnist_jax.config import files as config_files

_DATA_DIR = flags.DEFINE_string('data_dir', os.environ.get('MNIST_DIR'),
                                 'Folder with the four MNIST IDX files (default: $MNIST_DIR)')
_EPOCHS = flags.DEFINE_integer('epochs', 9, 'epochs per trial (the most a trial trains)')
_TRAIN_LIMIT = flags.DEFINE_integer('train_limit', 10000, 'training images per trial (0: all)')
_STRATEGIES = flags.DEFINE_list('strategies', ['grid', 'asha', 'tpe', 'tpe_asha', 'grid_vec4'],
                                'which searches to run')
_SEEDS = flags.DEFINE_list('seeds', ['0', '1', '2'],
                           'sampler seeds (every strategy but the grid runs once per seed)')
_OUT = flags.DEFINE_string('out', os.path.join(report.RESULTS, 'search_benchmark'),
                           'results path stem')

STRATEGIES = {  # name: (sampler, pruner, share of the grid's trials, trials per group)
    'grid': ('grid', 'none', 1.0, 1), 'asha': ('grid', 'asha', 1.0, 1),
    'tpe': ('tpe', 'none', 0.4, 1), 'tpe_asha': ('tpe', 'asha', 1.0, 1),
    'grid_vec4': ('grid', 'none', 1.0, 4)}


def space(h):
  return h.product([h.sweep('config.learning_rate', [5e-4, 1e-3, 2e-3, 4e-3]),
                    h.sweep('config.model.dropout_rate', [0.0, 0.25, 0.5])])


def config():
  c = config_files.load(os.path.join(report.ROOT, 'configs', 'lenet.py'))
  c.data.source, c.data.data_dir, c.data.download = 'idx', os.path.abspath(_DATA_DIR.value), False
  c.data.train_limit, c.num_epochs, c.write_plots = _TRAIN_LIMIT.value, _EPOCHS.value, False
  return c


def run(name: str, seed: int) -> dict:
  """Runs one strategy's study with one sampler seed; returns its numbers."""
  import optuna  # pylint: disable=g-import-not-at-top
  from mnist_jax.search import hyper, storage, study, worker  # pylint: disable=g-import-not-at-top
  sampler, pruner, share, vectorize = STRATEGIES[name]
  trials = space(hyper)
  search = study.Search(name=name, trials=trials, config=config(), sampler=sampler,
                        pruner=pruner, n_trials=0 if sampler == 'grid' else round(
                            share * len(trials)), seed=seed)
  study.check(search)
  with tempfile.TemporaryDirectory(prefix=f'search_{name}_') as workdir:
    url = storage.url_for(workdir)
    store = storage.open_storage(url)
    study.open_study(store, search, url)
    start = time.time()
    worker.work(store, search, workdir, vectorize=vectorize)
    wall = time.time() - start
    done = optuna.load_study(study_name=name, storage=store).get_trials()
  ran = [t for t in done if t.user_attrs.get('best_val_accuracy') is not None]
  best = max(ran, key=lambda t: t.user_attrs['best_val_accuracy'])
  order = [{'number': t.number, 'params': t.params, 'state': t.state.name,
            'epochs': t.user_attrs.get('epochs'),
            'best_val_accuracy': t.user_attrs.get('best_val_accuracy')} for t in done]
  return {'strategy': name, 'seed': seed, 'sampler': sampler, 'pruner': pruner,
          'vectorize_trials': vectorize,
          'trials': len(done), 'order': order,
          'pruned': sum(t.state.name == 'PRUNED' for t in done),
          'epochs': sum(t.user_attrs['epochs'] for t in ran),
          'best_val_accuracy': best.user_attrs['best_val_accuracy'],
          'test_accuracy_at_best_val': best.user_attrs['final_test_accuracy'],
          'best_params': best.params, 'wall_s': wall}


def _mean_row(name: str, runs: list, grid: dict) -> str:
  epochs = sum(r['epochs'] for r in runs) / len(runs)
  gaps = [100 * (r['best_val_accuracy'] - grid['best_val_accuracy']) for r in runs]
  hits = sum(g >= -0.05 for g in gaps)
  return (f"| **{name}, mean of {len(runs)} seeds** | | | | {epochs:.1f} | "
          f"**{100 * epochs / grid['epochs']:.0f} %** | | worst {min(gaps):+.2f} | | "
          f"within 0.05 points of the grid's best: {hits} of {len(runs)} | |")


def render(results: dict, setup: dict) -> str:
  grid = (results.get('grid') or [None])[0]
  lines = ['# Hyperparameter search: grid vs ASHA vs TPE (LeNet, 12-point space)', '',
           f"`{setup['command']}`", '',
           f"Machine: {setup['hardware']}; one worker, one process, on a machine "
           "that may be shared (wall-clock is an upper bound; epochs and "
           'accuracies do not depend on it).', '',
           f"configs/lenet.py, η ∈ {{5e-4, 1e-3, 2e-3, 4e-3}} x dropout ∈ {{0, 0.25, 0.5}}; "
           f"each trial on the first {setup['train_limit']} training images for up to "
           f"{setup['epochs']} epochs, validation on the last 5,000 training images, test "
           'on the 10,000 test images. Accuracies in points (%).', '',
           '| strategy | sampler | pruner | trials (pruned) | epochs trained | share of the '
           "grid's epochs | best val accuracy | vs grid (points) | test at best val | "
           'best point | wall-clock (s) |', '|' + '---|' * 11]
  for name in STRATEGIES:
    runs = results.get(name) or []
    for r in runs:
      share = f"{100 * r['epochs'] / grid['epochs']:.0f} %" if grid else ''
      gap = (f"{100 * (r['best_val_accuracy'] - grid['best_val_accuracy']):+.2f}"
             if grid else '')
      point = ', '.join(f'{k}={v}' for k, v in sorted(r['best_params'].items()))
      lines.append(f"| {name} (seed {r['seed']}) | {r['sampler']} | {r['pruner']} | "
                   f"{r['trials']} ({r['pruned']}) | {r['epochs']} | {share} | "
                   f"{100 * r['best_val_accuracy']:.2f} | {gap} | "
                   f"{100 * r['test_accuracy_at_best_val']:.2f} | {point} | {r['wall_s']:.0f} |")
    if grid and len(runs) > 1:
      lines.append(_mean_row(name, runs, grid))
  return '\n'.join(lines) + '\n'


def main(argv):
  del argv
  if not _DATA_DIR.value:
    raise app.UsageError('no MNIST IDX folder: pass --data_dir=DIR or set $MNIST_DIR')
  unknown = set(_STRATEGIES.value) - set(STRATEGIES)
  if unknown:
    raise app.UsageError(f'unknown --strategies {sorted(unknown)}; pick from {list(STRATEGIES)}')
  results = {}
  if os.path.exists(_OUT.value + '.json'):
    with open(_OUT.value + '.json') as f:
      saved = json.load(f)
    if saved['setup']['epochs'] == _EPOCHS.value and (
        saved['setup']['train_limit'] == _TRAIN_LIMIT.value) and all(
            isinstance(v, list) for v in saved['results'].values()):
      results = saved['results']
  for name in _STRATEGIES.value:
    seeds = [0] if name.startswith('grid') else [int(x) for x in _SEEDS.value]
    results[name] = [run(name, seed) for seed in seeds]
    print(json.dumps(results[name]), flush=True)
  setup = {'epochs': _EPOCHS.value, 'train_limit': _TRAIN_LIMIT.value,
           'hardware': f"{hardware.describe()}; {time.strftime('%Y-%m-%d')}",
           'command': report.command()}
  with open(_OUT.value + '.json', 'w') as f:
    json.dump({'setup': setup, 'results': results}, f, indent=1)
  report.write_markdown(_OUT.value + '.md', render(results, setup).splitlines())


if __name__ == '__main__':
  app.run(main)
