"""The sweep runner: each trial of a config's ``get_hyper(h)`` in its own workdir.

Trial i (its overrides from hyper.py) trains in ``workdir/<trial name>/`` with
the engine (engine/driver.py); a trial with ``summary.json`` is done and skipped,
an unfinished one resumes from its checkpoints, so a killed sweep is simply
rerun. ``--trial=N`` runs only trial N, for schedulers that farm trials out
(SLURM array jobs, Kubernetes indexed jobs). ``--vectorize`` trains trials that
differ only in per-trial hyperparameters together (engine/stacked.py): the
same driver, with K > 1 models.

The table ``workdir/results.{csv,md}`` is rebuilt from every trial directory's
summary.json after each trial, under a file lock and written atomically, so
separate processes merge into one table. Trials are ranked by their best
validation accuracy; the test accuracy is that epoch's, never used for ranking.
"""
import csv
import fcntl
import importlib.util
import io
import json
import os
import uuid

from absl import logging

from mnist_jax.errors import UserError
from mnist_jax.parallel import distributed
from mnist_jax.search import hyper

SUMMARY, OVERRIDES, ERROR = 'summary.json', 'overrides.json', 'error.txt'
COLUMNS = ('best_val_accuracy', 'test_accuracy_at_best_val', 'best_epoch', 'epochs',
           'train_time_s', 'vectorized_trials', 'status')


def load_trials(config_path: str) -> list:
  """The overrides returned by ``get_hyper(hyper)`` of the config file (a
  hyper.Trials: its ``space`` is the search space, or None)."""
  path = config_path.split(':')[0]
  spec = importlib.util.spec_from_file_location(f'_sweep_{uuid.uuid4().hex}', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, 'get_hyper'):
    raise UserError(f'{path} defines no get_hyper(h); add one returning e.g. '
                    "h.sweep('config.learning_rate', [1e-3, 3e-3]) (see mnist_jax/search/hyper.py)")
  trials = module.get_hyper(hyper)
  if not trials or not all(isinstance(t, dict) for t in trials):
    raise UserError(f'get_hyper in {path} returned {type(trials).__name__}; return a '
                    'non-empty list of dicts such as h.product([...])')
  return hyper.Trials([{hyper.canonical_key(k): v for k, v in t.items()} for t in trials],
                      hyper.space_of(trials))


def _atomic_write(path: str, text: str) -> None:
  tmp = f'{path}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp'
  with open(tmp, 'w') as f:
    f.write(text)
  os.replace(tmp, path)


def read_json(path: str):
  """The JSON in ``path``, or None if it is missing or not (yet) whole."""
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def collect(workdir: str) -> list:
  """One row per trial directory (finished ones ranked by best val accuracy)."""
  rows = []
  for name in sorted(os.listdir(workdir)):
    trial_dir = os.path.join(workdir, name)
    overrides = read_json(os.path.join(trial_dir, OVERRIDES))
    if overrides is None:
      continue
    row = {'trial': name, 'overrides': overrides, 'status': 'unfinished'}
    summary = read_json(os.path.join(trial_dir, SUMMARY))
    if summary is not None:
      row.update({k: summary.get(k) for k in COLUMNS if k != 'status'}, status='done')
      row['vectorized_trials'] = summary.get('vectorized_trials', 1)
    elif os.path.exists(os.path.join(trial_dir, ERROR)):
      with open(os.path.join(trial_dir, ERROR)) as f:
        row['status'] = 'failed: ' + f.read().strip()
    rows.append(row)
  key = lambda r: (r['status'] != 'done', -(r.get('best_val_accuracy') or 0.0), r['trial'])
  return sorted(rows, key=key)


def _cell(value, column: str = '') -> str:
  if isinstance(value, float):
    return f'{value:.4f}' if 'accuracy' in column else (
        f'{value:.1f}' if column.endswith('_s') else f'{value:.4g}')
  return '' if value is None else str(value)


def render(rows: list) -> tuple:
  """(csv text, markdown text) of the rows."""
  keys = sorted({k for r in rows for k in r['overrides']})
  header = ['rank', 'trial'] + keys + list(COLUMNS)
  table = [[i + 1 if r['status'] == 'done' else '', r['trial']]
           + [r['overrides'].get(k) for k in keys] + [r.get(c) for c in COLUMNS]
           for i, r in enumerate(rows)]
  buf = io.StringIO()
  csv.writer(buf).writerows([header] + table)
  md = ['Trials ranked by best validation accuracy; test accuracy is taken at that '
        'epoch (never used for ranking). train_time_s of vectorized trials is their '
        "group's time.", '', '| ' + ' | '.join(header) + ' |',
        '|' + '---|' * len(header)]
  md += ['| ' + ' | '.join(_cell(v, c) for v, c in zip(row, header)) + ' |'
         for row in table]
  return buf.getvalue(), '\n'.join(md) + '\n'


def write_table(workdir: str) -> str:
  """Rebuilds workdir/results.{csv,md} from the trial directories (process 0;
  an exclusive lock serializes concurrent writers); returns the .md path."""
  md_path = os.path.join(workdir, 'results.md')
  if not distributed.is_primary():
    return md_path
  with open(os.path.join(workdir, '.results.lock'), 'w') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    csv_text, md_text = render(collect(workdir))
    _atomic_write(os.path.join(workdir, 'results.csv'), csv_text)
    _atomic_write(md_path, md_text)
  return md_path


def _latest_epoch(trial_dir: str) -> int:
  path = os.path.join(trial_dir, 'checkpoints', 'latest')
  epochs = [int(n) for n in os.listdir(path) if n.isdigit()] if os.path.isdir(path) else []
  return max(epochs, default=0)


def _record(trial_dir: str, error) -> None:
  """error.txt holds why a trial stopped (removed once it succeeds)."""
  path = os.path.join(trial_dir, ERROR)
  if not distributed.is_primary():
    return
  if error is None:
    if os.path.exists(path):
      os.remove(path)
  else:
    _atomic_write(path, ' '.join(str(error).split()) + '\n')


def run_trials(configs, trials, workdir: str, indices=None, vectorize: bool = False,
        on_trained=None) -> list:
  """Trains the unfinished trials among ``indices`` (default: all); returns
  [(name, error or None)] for those it ran. Rebuilds the table after each.
  ``on_trained(config, workdir, outcome, data)`` is called for each trained
  trial (the command draws its plots there)."""
  from mnist_jax.engine import driver, stacked, workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  names = [hyper.trial_name(t) for t in trials]
  if len(set(names)) != len(names):
    raise UserError('get_hyper returned the same trial twice; make every trial\'s '
                    'overrides distinct')
  os.makedirs(workdir, exist_ok=True)
  indices = range(len(trials)) if indices is None else indices
  todo = [i for i in indices
          if not os.path.exists(os.path.join(workdir, names[i], SUMMARY))]
  for i in sorted(set(indices) - set(todo)):
    logging.info('trial %d %s is finished; skipped.', i, names[i])
  for i in todo:
    os.makedirs(os.path.join(workdir, names[i]), exist_ok=True)
    if distributed.is_primary():
      _atomic_write(os.path.join(workdir, names[i], OVERRIDES),
                    json.dumps(trials[i], indent=1, sort_keys=True) + '\n')
  batches = [[i] for i in todo]
  if vectorize:  # one batch per (signature, resume epoch)
    keyed = {}
    for i in todo:
      key = (stacked.signature(configs[i]), _latest_epoch(os.path.join(workdir, names[i])))
      keyed.setdefault(key, []).append(i)
    batches = list(keyed.values())
  ran = []
  for batch in batches:
    dirs = [os.path.join(workdir, names[i]) for i in batch]
    logging.info('trials %s: %s', batch, ', '.join(names[i] for i in batch))
    try:
      results = driver.train([configs[i] for i in batch], dirs)
      outcomes = results.outcomes
    except workdir_lib.WorkdirBusy as e:
      logging.warning('trials %s skipped: %s', batch, e)
      continue
    except UserError as e:
      outcomes = [driver.Outcome(error=e) for _ in batch]
    for i, d, o in zip(batch, dirs, outcomes):
      _record(d, o.error)
      ran.append((names[i], o.error))
      if o.error is None and on_trained is not None:
        on_trained(configs[i], d, o, results.data)
    write_table(workdir)
  return ran
