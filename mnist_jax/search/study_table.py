"""The search's one results table, results.{csv,md}, rendered from the study (search/study.py).

One row per trial, ranked by its best validation accuracy (complete and pruned
trials alike: a pruned trial's is that of the epochs it ran); trials without
one (failed, running, waiting) follow by number. The figures (``FIGURES``) are
what the worker recorded with the trial when it ended (``figures``):

  best_val_accuracy, best_epoch       max over epochs e of val accuracy, and that e
                                      (summary.json: the engine's best-epoch rule)
  train_loss / train_accuracy /       the epoch record of that e (metrics.jsonl):
  val_loss _at_best_val               per-epoch figures are train and validation only
  final_test_accuracy                 the test split, read once at the end of the
                                      trial for the best-validation weights
                                      (summary.json's test_accuracy_at_best_val); a
                                      last column, never used for ranking

``retry_of`` names the first attempt of a trial that was run again (a dead
worker's, or one asked for with ``--trial=N`` after it failed); an attempt whose
worker died says ``fail (worker died)``. Each worker rewrites the files after
every trial, atomically (store/writers.write_atomic), from the study: one
consistent snapshot, so concurrent writers never mix rows.
"""
import csv
import io
import os

import optuna

from mnist_jax.store import workdir as workdir_lib, writers

COLUMNS = ('best_val_accuracy', 'best_epoch', 'epochs', 'train_loss_at_best_val',
           'train_accuracy_at_best_val', 'val_loss_at_best_val', 'train_time_s',
           'vectorized_trials', 'time_s', 'retry_of', 'dir', 'note', 'final_test_accuracy')
FROM_SUMMARY = {'best_val_accuracy': 'best_val_accuracy', 'best_epoch': 'best_epoch',
                'epochs': 'epochs', 'train_time_s': 'train_time_s',
                'vectorized_trials': 'vectorized_trials',
                'final_test_accuracy': 'test_accuracy_at_best_val'}
AT_BEST = {'train_loss_at_best_val': 'train_loss', 'train_accuracy_at_best_val': 'train_accuracy',
           'val_loss_at_best_val': 'val_loss'}   # from the best epoch's metrics.jsonl record
FIGURES = tuple(c for c in COLUMNS if c in FROM_SUMMARY or c in AT_BEST)


def figures(summary: dict, trial_dir: str) -> dict:
  """The FIGURES of a trial that ended with ``summary`` in ``trial_dir`` (those it has)."""
  out = {c: summary.get(k) for c, k in FROM_SUMMARY.items()}
  best = summary.get('best_epoch')
  record = next((r for r in workdir_lib.load_history(trial_dir) if r.get('epoch') == best), {})
  out.update({c: record.get(k) for c, k in AT_BEST.items()})
  return {c: out[c] for c in FIGURES if out[c] is not None}


def _state(t, retried: set) -> str:
  state = t.state.name.lower()
  died = (t.state == optuna.trial.TrialState.FAIL and t.number in retried
          and not t.user_attrs.get('error'))
  return 'fail (worker died)' if died else state


def rows(trials) -> list:
  """Dict rows of the frozen trials, ranked."""
  retried = {n for t in trials for n in t.system_attrs.get('retry_history', [])}
  out = []
  for t in trials:
    seconds = ((t.datetime_complete - t.datetime_start).total_seconds()
               if t.datetime_complete and t.datetime_start else None)
    out.append({'trial': t.number, 'state': _state(t, retried),
                'overrides': t.user_attrs.get('overrides', {}),
                **{c: t.user_attrs.get(c) for c in COLUMNS},
                'time_s': seconds, 'retry_of': t.system_attrs.get('failed_trial'),
                'note': t.user_attrs.get('error', '')})
  ranked = sorted((r for r in out if r['best_val_accuracy'] is not None),
                  key=lambda r: (-r['best_val_accuracy'], r['trial']))
  for i, r in enumerate(ranked):
    r['rank'] = i + 1
  return ranked + [r for r in out if r['best_val_accuracy'] is None]


def _cell(value, column: str) -> str:
  if isinstance(value, float):
    return (f'{value:.4f}' if 'accuracy' in column or 'loss' in column else
            f'{value:.1f}' if column.endswith('_s') else f'{value:.4g}')
  return '' if value is None else str(value)


def render(table: list, name: str) -> tuple:
  """(csv text, markdown text) of the rows."""
  keys = sorted({k for r in table for k in r['overrides']})
  header = ['rank', 'trial', 'state'] + keys + list(COLUMNS)
  cells = [[r.get('rank'), r['trial'], r['state']] + [r['overrides'].get(k) for k in keys]
           + [r.get(c) for c in COLUMNS] for r in table]
  buf = io.StringIO()
  csv.writer(buf).writerows([header] + cells)
  md = [f'Study {name}: trials ranked by best validation accuracy; the *_at_best_val '
        'figures are that epoch\'s train and validation ones. final_test_accuracy is the '
        'test split read once, after the trial, for its best-validation weights (never '
        'used for ranking). Pruned trials stopped after the epochs shown; time_s is the '
        "trial's wall time (train_time_s of vectorized trials is their group's).", '',
        '| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  md += ['| ' + ' | '.join(_cell(v, c) for v, c in zip(row, header)) + ' |' for row in cells]
  return buf.getvalue(), '\n'.join(md) + '\n'


def write(storage, name: str, workdir: str) -> str:
  """Rewrites workdir/results.{csv,md} from the study; returns the .md path."""
  study = optuna.load_study(study_name=name, storage=storage)
  csv_text, md_text = render(rows(study.get_trials(deepcopy=False)), name)
  os.makedirs(workdir, exist_ok=True)
  md_path = os.path.join(workdir, 'results.md')
  writers.write_atomic(os.path.join(workdir, 'results.csv'), csv_text)
  writers.write_atomic(md_path, md_text)
  return md_path
