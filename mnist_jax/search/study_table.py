"""results.{csv,md} of a study, rendered from the study's storage (search/study.py).

One row per trial, ranked by its best validation accuracy (complete and pruned
trials alike: a pruned trial's is that of the epochs it ran); the test accuracy
is taken at that epoch and never used for ranking. Trials without one (failed,
running, waiting) follow by number. ``retry_of`` names the first attempt of a
trial that a dead worker left; that attempt's row says ``fail (worker died)``.
Each worker rewrites the files after every trial, atomically, from the study
(one consistent snapshot), so concurrent writers never mix rows.
"""
import csv
import io
import os
import uuid

import optuna

COLUMNS = ('best_val_accuracy', 'test_accuracy_at_best_val', 'best_epoch', 'epochs',
           'time_s', 'retry_of', 'dir', 'note')


def rows(trials) -> list:
  """Dict rows of the frozen trials, ranked."""
  retried = {n for t in trials for n in t.system_attrs.get('retry_history', [])}
  out = []
  for t in trials:
    state = t.state.name.lower()
    if t.state == optuna.trial.TrialState.FAIL and t.number in retried:
      state = 'fail (worker died)'
    seconds = ((t.datetime_complete - t.datetime_start).total_seconds()
               if t.datetime_complete and t.datetime_start else None)
    out.append({'trial': t.number, 'state': state,
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
    return f'{value:.4f}' if 'accuracy' in column else (
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
  md = [f'Study {name}: trials ranked by best validation accuracy; test accuracy is '
        'taken at that epoch (never used for ranking). Pruned trials stopped after '
        "the epochs shown; time_s is the trial's wall time.", '',
        '| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  md += ['| ' + ' | '.join(_cell(v, c) for v, c in zip(row, header)) + ' |' for row in cells]
  return buf.getvalue(), '\n'.join(md) + '\n'


def _atomic_write(path: str, text: str) -> None:
  tmp = f'{path}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp'
  with open(tmp, 'w') as f:
    f.write(text)
  os.replace(tmp, path)


def write(storage, name: str, workdir: str) -> str:
  """Rewrites workdir/results.{csv,md} from the study; returns the .md path."""
  study = optuna.load_study(study_name=name, storage=storage)
  csv_text, md_text = render(rows(study.get_trials(deepcopy=False)), name)
  os.makedirs(workdir, exist_ok=True)
  md_path = os.path.join(workdir, 'results.md')
  _atomic_write(os.path.join(workdir, 'results.csv'), csv_text)
  _atomic_write(md_path, md_text)
  return md_path
