"""Sweeps: the h.* functions, trial names, overrides, running/skipping trials,
the merged results table, and the command line (--list, --trial, errors)."""
import csv
import json
import os
import subprocess
import sys
import textwrap
import threading

import pytest

from mnist_jax.search import runner
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


def test_sweep_runs_each_trial_once_and_ranks_by_validation(tmp_path, small_config):
  trials = hyper.sweep('learning_rate', [3e-4, 3e-3])
  configs = [hyper.apply(_tiny(small_config), t) for t in trials]
  workdir = str(tmp_path)
  ran = runner.run_trials(configs, trials, workdir, indices=[1])       # like --trial=1
  assert ran == [('learning_rate=0.003', None)]
  with open(tmp_path / 'results.csv') as f:
    assert len(list(csv.reader(f))) == 2                       # header + 1 trial
  ran = runner.run_trials(configs, trials, workdir)                    # the rest; 1 is skipped
  assert [name for name, _ in ran] == ['learning_rate=0.0003']
  assert runner.run_trials(configs, trials, workdir) == []             # all finished
  with open(tmp_path / 'results.csv') as f:
    rows = list(csv.DictReader(f))
  vals = [float(r['best_val_accuracy']) for r in rows]
  assert vals == sorted(vals, reverse=True) and len(rows) == 2
  summary = json.loads((tmp_path / rows[0]['trial'] / 'summary.json').read_text())
  assert float(rows[0]['test_accuracy_at_best_val']) == pytest.approx(
      summary['test_accuracy_at_best_val'], abs=1e-4)
  assert rows[0]['rank'] == '1' and 'learning_rate' in rows[0]
  assert '| 1 |' in (tmp_path / 'results.md').read_text()


def test_vectorize_groups_trials_by_signature_and_skips_finished_ones(tmp_path, small_config):
  """--vectorize: the two η trials train as one vmapped group, the batch-size
  trial (another program) on its own; every trial gets its row and is done."""
  trials = [{'learning_rate': 3e-3}, {'learning_rate': 1e-3}, {'batch_size': 64}]
  configs = [hyper.apply(_tiny(small_config), t) for t in trials]
  ran = runner.run_trials(configs, trials, str(tmp_path), vectorize=True)
  assert sorted(name for name, error in ran if error is None) == sorted(
      hyper.trial_name(t) for t in trials)
  with open(tmp_path / 'results.csv') as f:
    rows = {r['trial']: r for r in csv.DictReader(f)}
  assert {n: rows[n]['vectorized_trials'] for n in rows} == {
      'learning_rate=0.003': '2', 'learning_rate=0.001': '2', 'batch_size=64': '1'}
  assert all(rows[n]['status'] == 'done' for n in rows)
  assert runner.run_trials(configs, trials, str(tmp_path), vectorize=True) == []


def test_concurrent_table_writers_never_corrupt_the_table(tmp_path):
  for i in range(30):
    d = tmp_path / f'trial{i:02d}'
    d.mkdir()
    (d / 'overrides.json').write_text(json.dumps({'seed': i}))
    (d / 'summary.json').write_text(json.dumps(
        {'best_val_accuracy': i / 100, 'test_accuracy_at_best_val': 0.5, 'best_epoch': 1,
         'epochs': 1, 'train_time_s': 1.0}))
  threads = [threading.Thread(target=runner.write_table, args=(str(tmp_path),))
             for _ in range(8)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  with open(tmp_path / 'results.csv') as f:
    rows = list(csv.DictReader(f))
  assert [r['trial'] for r in rows] == [f'trial{i:02d}' for i in reversed(range(30))]
  assert not [p for p in os.listdir(tmp_path) if p.endswith('.tmp')]


def test_the_atomic_writer_takes_concurrent_writers_of_one_file(tmp_path):
  """engine/writers.write_atomic is the one atomic writer (summaries, overrides,
  the search tables): each writer has its own temporary file, so writers racing
  on one path (study workers rewriting results.md) leave one whole version."""
  from mnist_jax.engine import writers
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
  out = _cli(tmp_path, mnist_small_dir, 'learning_rate', '--list')
  assert out.returncode == 0, out.stderr[-2000:]
  assert out.stdout.splitlines()[1].startswith('1\tlearning_rate=0.002,seed=0\t')
  out = _cli(tmp_path, mnist_small_dir, 'learning_rate', '--trial=1',
             '--config.log_every_steps=2')
  assert out.returncode == 0, out.stderr[-2000:]
  assert os.listdir(tmp_path / 'sweep' / 'learning_rate=0.002,seed=0' / 'checkpoints')
  assert not (tmp_path / 'sweep' / 'learning_rate=0.001,seed=0').exists()
  assert 'learning_rate=0.002,seed=0' in (tmp_path / 'sweep' / 'results.md').read_text()


def test_cli_unknown_sweep_key_is_one_line(tmp_path, mnist_small_dir):
  out = _cli(tmp_path, mnist_small_dir, 'learnig_rate', '--num_trials')
  assert out.returncode == 2
  lines = [l for l in out.stderr.splitlines() if l.startswith('error:')]
  assert len(lines) == 1 and "unknown sweep key 'config.learnig_rate'" in lines[0]


def test_cli_lists_without_a_workdir(tmp_path, mnist_small_dir):
  path = tmp_path / 'lr.py'
  path.write_text(textwrap.dedent(CONFIG.format(data=mnist_small_dir, key='learning_rate')))
  for flag in ('--list', '--num_trials'):
    out = subprocess.run([sys.executable, '-m', 'mnist_jax.sweep', f'--config={path}', flag],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
  assert out.stdout.strip() == '2'
  assert sorted(os.listdir(tmp_path)) == ['lr.py']          # nothing written


def test_vectorized_trials_get_their_plots(tmp_path, small_config):
  """write_plots holds for every trial, vectorized ones too (the command draws them)."""
  small_config.write_plots = True
  trials = [{'learning_rate': 3e-3}, {'learning_rate': 1e-3}]
  configs = [hyper.apply(_tiny(small_config), t) for t in trials]
  drawn = []
  runner.run_trials(configs, trials, str(tmp_path), vectorize=True,
                    on_trained=lambda c, w, o, d: drawn.append((w, o.state is not None)))
  assert sorted(drawn) == sorted((str(tmp_path / hyper.trial_name(t)), True) for t in trials)
