"""Sweeps: the h.* functions, trial names, the one override applier, the one
atomic writer, --trial=N on the study's one queue, the one results table, and
the command line (--list, --trial, --vectorize, errors)."""
import csv
import json
import os
import re
import subprocess
import sys
import textwrap
import threading

import pytest

from mnist_jax.config import defaults
from mnist_jax.search import hyper
from mnist_jax.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_product_zipit_chainit_build_the_trial_lists():
  lr = hyper.sweep('config.learning_rate', [1e-3, 3e-3])
  zipped = hyper.zipit([hyper.sweep('config.model.dropout_rate', [0.0, 0.5]),
                        hyper.sweep('config.weight_decay', [0.0, 1e-4])])
  trials = hyper.product([lr, zipped])
  assert len(trials) == 4
  assert trials[1] == {'learning_rate': 1e-3, 'model.dropout_rate': 0.5, 'weight_decay': 1e-4}
  assert hyper.chainit([lr, hyper.fixed('seed', 3)])[-1] == {'seed': 3}
  with pytest.raises(UserError, match='same number'):
    hyper.zipit([lr, hyper.sweep('seed', [1, 2, 3])])
  with pytest.raises(UserError, match='set twice'):
    hyper.product([lr, lr])


def test_random_samples_are_seeded_and_in_range():
  a = hyper.random('config.learning_rate', hyper.loguniform(1e-4, 1e-2), n=8, seed=0)
  b = hyper.random('config.learning_rate', hyper.loguniform(1e-4, 1e-2), n=8, seed=0)
  c = hyper.random('config.learning_rate', hyper.loguniform(1e-4, 1e-2), n=8, seed=1)
  assert a == b and a != c and len(a) == 8
  values = [t['learning_rate'] for t in a]
  assert all(1e-4 <= v <= 1e-2 for v in values)
  assert all(float(f'{v:.4g}') == v for v in values)  # rounded to 4 significant digits
  joint = hyper.random({'momentum': hyper.uniform(0.8, 0.99),
                        'optimizer': hyper.choice(['adam', 'sgd'])}, n=5, seed=2)
  assert all(0.8 <= t['momentum'] <= 0.99 and t['optimizer'] in ('adam', 'sgd') for t in joint)
  with pytest.raises(UserError, match='distribution'):
    hyper.random('learning_rate', [1, 2], n=2)


def test_trial_names_are_stable_and_filesystem_safe():
  name = hyper.trial_name({'model.dropout_rate': 0.25, 'learning_rate': 0.003})
  assert name == 'learning_rate=0.003,model.dropout_rate=0.25'
  assert hyper.trial_name({'learning_rate': 0.003, 'model.dropout_rate': 0.25}) == name
  odd = hyper.trial_name({'data.data_dir': '/a b/c'})
  assert '/' not in odd and ' ' not in odd
  assert odd != hyper.trial_name({'data.data_dir': '/a_b/c'})  # hash keeps them apart
  long = hyper.trial_name({f'k{i}': 1.0 / 3 + i for i in range(20)})
  assert len(long) <= 100
  assert hyper.trial_name({}) == 'base'


def test_apply_sets_keys_and_rejects_unknown_ones():
  config = defaults.get_config()
  out = hyper.apply(config, {'learning_rate': 3e-3, 'model.c3_table': True})
  assert out.learning_rate == 3e-3 and out.model.c3_table and config.learning_rate == 1e-3
  with pytest.raises(UserError, match="unknown sweep key 'config.learnin_rate'"):
    hyper.apply(config, {'learnin_rate': 1.0})
  with pytest.raises(UserError, match='unknown sweep key'):
    hyper.apply(config, {'model.no_such_option': 1})
  with pytest.raises(UserError, match='does not fit'):
    hyper.apply(config, {'batch_size': 'large'})


def test_one_override_applier_serves_sweeps_the_api_and_saved_runs():
  """config.overrides.apply is the one place a dotted override meets a config:
  sweeps (hyper.apply), the notebook API (api.make_config) and saved runs
  (rundir.config_from_json) all go through it, so JSON/Python lists become the
  tuples the models take and a typo in a nested key fails everywhere."""
  from mnist_jax import api
  from mnist_jax.config import overrides
  from mnist_jax.engine import rundir
  config = defaults.get_config()
  out = overrides.apply(config, {'model.features': [4, 8], 'augment.rotate': 5.0},
                        may_add=hyper.model_option)
  assert out.model.features == (4, 8) and out.augment.rotate == 5.0
  assert 'features' not in config.model and config.augment.rotate != 5.0   # a copy
  assert hyper.apply(config, {'model.features': [4, 8]}).model.features == (4, 8)
  with pytest.raises(UserError, match="unknown override 'config.model.features'"):
    overrides.apply(config, {'model.features': [4]})       # no model options allowed
  with pytest.raises(UserError, match="unknown sweep key 'config.augment.rotat'"):
    hyper.apply(config, {'augment.rotat': 5.0})
  with pytest.raises(UserError, match="unknown option 'config.augment.rotat'"):
    api.make_config('cnn', augment=dict(rotat=5.0))
  saved = config.to_dict()
  saved.update(batch_size=64, retired_key=1, model={'name': 'cnn', 'features': [4]})
  loaded = rundir.config_from_json(saved)       # an older run: unknown keys are kept
  assert loaded.batch_size == 64 and loaded.retired_key == 1
  assert loaded.model.features == (4,)
  lenient = overrides.apply(config, {'seed': 'zero', 'new.leaf': 1}, lenient=True)
  assert lenient.seed == 'zero' and lenient.new.leaf == 1


def _tiny(config):
  config.data.train_limit = 300
  config.write_plots = False
  return config


def _study(tmp_path, small_config, trials, name='s', **kwargs):
  from mnist_jax.search import storage, study
  search = study.Search(name=name, trials=trials, config=_tiny(small_config), **kwargs)
  url = storage.url_for(str(tmp_path))
  store = storage.open_storage(url)
  study.open_study(store, search, url)
  return store, search


def test_trial_n_runs_the_nth_queued_trial_of_the_one_study(tmp_path, small_config):
  """--trial=N and the workers share one queue: run_trial(N) runs queued trial N
  (line N of --list), a worker then runs only the rest, and a finished trial is
  not run again; both rewrite the one table of the study."""
  import optuna
  from mnist_jax.search import launch, study, study_table, worker
  trials = hyper.sweep('learning_rate', [3e-4, 3e-3])
  store, search = _study(tmp_path, small_config, trials)
  second = trials[study.grid_order(2, 0)[1]]
  assert launch.listing(search)[1].startswith(f'1\t{hyper.trial_name(second)}\t')
  assert [(n, s) for n, s, _ in worker.run_trial(store, search, str(tmp_path), 1)] == [
      (1, 'complete')]
  done = optuna.load_study(study_name='s', storage=store).get_trials()
  assert [t.state.name for t in done] == ['WAITING', 'COMPLETE']
  assert done[1].user_attrs['dir'] == hyper.trial_name(second)
  assert [n for n, _, _ in worker.work(store, search, str(tmp_path))] == [0]  # only the rest
  assert worker.run_trial(store, search, str(tmp_path), 1) == []              # finished
  study_table.write(store, 's', str(tmp_path))
  with open(tmp_path / 'results.csv') as f:
    rows = list(csv.DictReader(f))
  vals = [float(r['best_val_accuracy']) for r in rows]
  assert vals == sorted(vals, reverse=True) and len(rows) == 2 and rows[0]['rank'] == '1'
  with pytest.raises(UserError, match=r'--trial=2 but the study queues 2 trials; pass 0..1'):
    worker.run_trial(store, search, str(tmp_path), 2)


def test_trial_n_runs_a_failed_trial_again_as_a_new_attempt(tmp_path, small_config):
  """A trial that FAILed (here: an attempt whose worker was lost) is queued again
  by --trial=N, with the same point, and the table names the first attempt."""
  import optuna
  from mnist_jax.search import storage, study_table, worker
  store, search = _study(tmp_path, small_config, hyper.sweep('learning_rate', [3e-3]))
  study_id = store.get_study_id_from_name('s')
  trial_id, _ = storage.pop(store, study_id)
  store.set_trial_state_values(trial_id, state=optuna.trial.TrialState.FAIL)
  ran = worker.run_trial(store, search, str(tmp_path), 0)
  assert [(n, s, e) for n, s, e in ran] == [(1, 'complete', None)]
  first, retry = optuna.load_study(study_name='s', storage=store).get_trials()
  assert retry.system_attrs['failed_trial'] == 0 and retry.params == {'learning_rate': 3e-3}
  assert retry.system_attrs['fixed_params'] == first.system_attrs['fixed_params']
  assert retry.user_attrs['dir'] == 'learning_rate=0.003'
  study_table.write(store, 's', str(tmp_path))
  rows = {r['trial']: r for r in csv.DictReader(open(tmp_path / 'results.csv'))}
  assert rows['1']['retry_of'] == '0' and rows['0']['state'] == 'fail (worker died)'


def test_the_table_holds_train_and_val_figures_and_test_once_at_the_end(tmp_path,
                                                                        small_config):
  """Per-epoch figures in the table are train/val ones, from the best-validation
  epoch's record; the only test figure is summary.json's final one, labelled so."""
  import optuna
  from mnist_jax.search import study_table, worker
  small_config.num_epochs = 2
  store, search = _study(tmp_path, small_config, hyper.sweep('learning_rate', [3e-3]))
  worker.work(store, search, str(tmp_path))
  study_table.write(store, 's', str(tmp_path))
  (row,) = csv.DictReader(open(tmp_path / 'results.csv'))
  tests = [c for c in row if 'test' in c]
  assert tests == ['final_test_accuracy'] and list(row)[-1] == 'final_test_accuracy'
  run = tmp_path / 'learning_rate=0.003'
  summary = json.loads((run / 'summary.json').read_text())
  records = [json.loads(l) for l in (run / 'metrics.jsonl').read_text().splitlines()]
  best = next(r for r in records if r['epoch'] == summary['best_epoch'])
  assert int(row['best_epoch']) == summary['best_epoch']
  for column, key in (('train_loss_at_best_val', 'train_loss'),
                      ('train_accuracy_at_best_val', 'train_accuracy'),
                      ('val_loss_at_best_val', 'val_loss'),
                      ('best_val_accuracy', 'val_accuracy')):
    assert float(row[column]) == pytest.approx(best[key], abs=1e-4), column
  assert float(row['final_test_accuracy']) == pytest.approx(
      summary['test_accuracy_at_best_val'], abs=1e-4)
  assert 'test split read once, after the trial' in (tmp_path / 'results.md').read_text()
  (trial,) = optuna.load_study(study_name='s', storage=store).get_trials()
  assert not [k for k in trial.user_attrs if 'test' in k and k != 'final_test_accuracy']


def test_vectorized_trials_get_their_plots(tmp_path, small_config):
  """write_plots holds for every trial, vectorized ones too (the command draws them)."""
  from mnist_jax.search import worker
  small_config.write_plots = True
  trials = hyper.sweep('learning_rate', [3e-3, 1e-3])
  store, search = _study(tmp_path, small_config, trials)
  drawn = []
  worker.work(store, search, str(tmp_path), vectorize=2,
             on_trained=lambda c, w, o, d: drawn.append((w, o.state is not None)))
  assert sorted(drawn) == sorted((str(tmp_path / hyper.trial_name(t)), True) for t in trials)


def test_the_atomic_writer_takes_concurrent_writers_of_one_file(tmp_path):
  """store/writers.write_atomic is the one atomic writer (summaries, overrides,
  the search tables): each writer has its own temporary file, so writers racing
  on one path (study workers rewriting results.md) leave one whole version."""
  from mnist_jax.store import writers
  path = str(tmp_path / 'results.json')
  errors = []

  def write(i):
    try:
      for _ in range(20):
        writers.write_json_atomic(path, {'writer': i, 'rows': list(range(200))})
    except OSError as e:
      errors.append(e)

  threads = [threading.Thread(target=write, args=(i,)) for i in range(8)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  assert not errors
  assert json.loads(open(path).read())['rows'] == list(range(200))
  assert os.listdir(tmp_path) == ['results.json']                     # no temporary left
  writers.write_atomic(str(tmp_path / 'results.md'), '| a |\n')
  assert (tmp_path / 'results.md').read_text() == '| a |\n'


CONFIG = '''
from mnist_jax.config import defaults
def get_config():
  c = defaults.get_config()
  c.data.source = 'idx'; c.data.data_dir = {data!r}; c.data.download = False
  c.data.val_size = 500; c.data.train_limit = 200; c.batch_size = 50
  c.eval_batch_size = 500; c.num_epochs = 1; c.write_plots = False
  c.model.name = 'mlp'; c.model.hidden = (32,)
  return c
def get_hyper(h):
  return h.product([h.sweep('config.{key}', [1e-3, 2e-3]), h.sweep('config.seed', [0])])
'''


def _cli(tmp_path, mnist_small_dir, key, *args):
  path = tmp_path / f'{key}.py'
  path.write_text(textwrap.dedent(CONFIG.format(data=mnist_small_dir, key=key)))
  cmd = [sys.executable, '-m', 'mnist_jax.sweep', f'--config={path}',
         f'--workdir={tmp_path / "sweep"}', *args]
  return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_cli_lists_and_runs_one_trial(tmp_path, mnist_small_dir):
  """--list prints the study's queue; --trial=1 runs its line 1 in the study of
  WORKDIR; --vectorize (all queued trials at once) then runs the other one."""
  from mnist_jax.search import study
  out = _cli(tmp_path, mnist_small_dir, 'learning_rate', '--list')
  assert out.returncode == 0, out.stderr[-2000:]
  names = ['learning_rate=0.001,seed=0', 'learning_rate=0.002,seed=0']
  queued = [names[i] for i in study.grid_order(2, 0)]
  assert [l.split('\t')[:2] for l in out.stdout.splitlines()] == [['0', queued[0]],
                                                                 ['1', queued[1]]]
  out = _cli(tmp_path, mnist_small_dir, 'learning_rate', '--trial=1',
             '--config.log_every_steps=2')
  assert out.returncode == 0, out.stderr[-2000:]
  sweep = tmp_path / 'sweep'
  assert os.listdir(sweep / queued[1] / 'checkpoints') and not (sweep / queued[0]).exists()
  assert (sweep / 'study.db').exists() and queued[1] in (sweep / 'results.md').read_text()
  assert re.search(r'trial 1 complete: best val accuracy \S+ at epoch 1 of 1 \(train loss',
                   out.stderr), out.stderr[-2000:]
  out = _cli(tmp_path, mnist_small_dir, 'learning_rate', '--vectorize',
             '--config.log_every_steps=2')
  assert out.returncode == 0, out.stderr[-2000:]
  assert 'ran 1 trial(s), 0 failed' in out.stdout
  rows = list(csv.DictReader(open(sweep / 'results.csv')))
  assert sorted(r['dir'] for r in rows) == sorted(names)
  assert {r['state'] for r in rows} == {'complete'}
  out = _cli(tmp_path, mnist_small_dir, 'learning_rate', '--trial=2')
  assert out.returncode == 2 and 'error: --trial=2 but the study queues 2 trials' in out.stderr


def test_cli_unknown_sweep_key_is_one_line(tmp_path, mnist_small_dir):
  out = _cli(tmp_path, mnist_small_dir, 'learnig_rate')
  assert out.returncode == 2
  lines = [l for l in out.stderr.splitlines() if l.startswith('error:')]
  assert len(lines) == 1 and "unknown sweep key 'config.learnig_rate'" in lines[0]
  assert os.listdir(tmp_path) == ['learnig_rate.py']          # nothing written


def test_cli_lists_without_a_workdir(tmp_path, mnist_small_dir):
  path = tmp_path / 'lr.py'
  path.write_text(textwrap.dedent(CONFIG.format(data=mnist_small_dir, key='learning_rate')))
  for flag in ('--list', '--num_trials'):
    out = subprocess.run([sys.executable, '-m', 'mnist_jax.sweep', f'--config={path}', flag],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
  assert out.stdout.strip() == '2'
  assert sorted(os.listdir(tmp_path)) == ['lr.py']          # nothing written
