"""Studies (search/study.py) and their workers (search/worker.py): get_hyper as
Optuna parameters, workers on real SQLite, journal and PostgreSQL storages
running each trial exactly once, a SIGKILLed worker's trial retried, pruning,
the table, and bad input.

The PostgreSQL server is a real one that the fixture starts in a temporary
folder on 127.0.0.1 (initdb / pg_ctl of Debian's postgresql; as the postgres
user when run as root) and stops after the module; without the binaries those
tests skip with the reason (CI installs them: .ci/run).
"""
import collections
import csv
import dataclasses
import glob
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time

import optuna
import pytest

from mnist_jax.errors import UserError
from mnist_jax.search import hyper, space, storage as storage_lib, study as study_lib
from mnist_jax.search import study_table, worker

# pytest-xdist: the tests on PostgreSQL run on one worker, so its server starts once;
# the others go to any free worker
POSTGRESQL = pytest.param('postgresql', marks=pytest.mark.xdist_group('postgres'))
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GRID = "h.product([h.sweep('config.learning_rate', [1e-3, 3e-3, 1e-2]), h.sweep('config.seed', [0, 1])])"
CONFIG = '''
from mnist_jax.config import defaults
def get_config():
  c = defaults.get_config()
  c.data.source = 'idx'; c.data.data_dir = {data!r}; c.data.download = False
  c.data.val_size = 500; c.data.train_limit = {limit}; c.batch_size = 50
  c.eval_batch_size = 500; c.num_epochs = {epochs}; c.write_plots = False
  c.model.name = 'mlp'; c.model.hidden = (32,); c.log_every_steps = 1000
  return c
def get_hyper(h):
  return {hyper}
'''


def _config_file(tmp_path, data, epochs=1, limit=100, grid=GRID, name='tiny'):
  path = tmp_path / f'{name}.py'
  path.write_text(textwrap.dedent(CONFIG.format(data=data, epochs=epochs, limit=limit,
                                                hyper=grid)))
  return str(path)


def _worker(config, workdir, *args):
  cmd = [sys.executable, '-m', 'mnist_jax.sweep', f'--config={config}',
         f'--workdir={workdir}', *args]
  return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)


def _trials(url, name='tiny'):
  store = storage_lib.open_storage(url, 1, 3)
  return optuna.load_study(study_name=name, storage=store).get_trials(deepcopy=False)


# --- the PostgreSQL server --------------------------------------------------------


def _pg_bin():
  found = shutil.which('pg_ctl')
  if found:
    return os.path.dirname(os.path.realpath(found))
  dirs = sorted(glob.glob('/usr/lib/postgresql/*/bin/pg_ctl'))
  return os.path.dirname(dirs[-1]) if dirs else None


@pytest.fixture(scope='module')
def postgres_url():
  """A throw-away PostgreSQL server on 127.0.0.1; its URL."""
  bin_dir = _pg_bin()
  if bin_dir is None:
    pytest.skip('PostgreSQL server binaries (initdb, pg_ctl) are not installed: '
                'apt-get install postgresql (CI does, .ci/run)')
  as_user = []
  folder = tempfile.mkdtemp(prefix='mnist_jax_pg_')
  if os.geteuid() == 0:   # initdb refuses root: the server runs as the postgres user
    as_user = ['runuser', '-u', 'postgres', '--']
    os.chmod(folder, 0o755)
    shutil.chown(folder, 'postgres')
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
  data = os.path.join(folder, 'data')
  run = lambda *a: subprocess.run(as_user + list(a), check=True, capture_output=True,
                                  timeout=120)
  run(os.path.join(bin_dir, 'initdb'), '-D', data, '-A', 'trust', '-U', 'postgres')
  run(os.path.join(bin_dir, 'pg_ctl'), '-D', data, '-l', os.path.join(folder, 'log'), '-w',
      '-o', f'-h 127.0.0.1 -p {port} -k {folder}', 'start')
  try:
    yield f'postgresql+psycopg2://postgres@127.0.0.1:{port}/postgres'
  finally:
    run(os.path.join(bin_dir, 'pg_ctl'), '-D', data, '-m', 'immediate', '-w', 'stop')
    shutil.rmtree(folder, ignore_errors=True)


# --- get_hyper as Optuna parameters -------------------------------------------------


def test_declarations_become_optuna_distributions():
  trials = hyper.product([hyper.sweep('config.model.hidden', [(64,), (128, 64)]),
                          hyper.random('learning_rate', hyper.loguniform(1e-4, 1e-2), n=2)])
  dists = space.distributions(trials.space)
  lr, _ = dists['learning_rate']
  assert isinstance(lr, optuna.distributions.FloatDistribution) and lr.log
  assert (lr.low, lr.high) == (1e-4, 1e-2)
  hidden, table = dists['model.hidden']
  assert hidden.choices == ('[64]', '[128, 64]') and table['[128, 64]'] == (128, 64)
  grid, _ = space.grid_choices(trials)['model.hidden']
  assert grid.choices == ('[64]', '[128, 64]')
  zipped = hyper.zipit([hyper.sweep('learning_rate', [1e-3, 2e-3]),
                        hyper.sweep('seed', [0, 1])])
  assert zipped.space is None and len(zipped) == 2
  with pytest.raises(UserError, match='--sampler=tpe draws from distributions.*--sampler=grid'):
    space.require_space(zipped, 'tpe', 'c.py')


def test_a_grid_is_queued_once_per_point_in_a_seeded_shuffled_order(tmp_path, small_config):
  """A grid declared from small to large η is not queued in that order (asynchronous
  successive halving would let every next, better-looking trial through): the order
  is a seeded permutation, each point exactly once, the same for the same seed."""
  rates = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2]
  orders = []
  for seed in (0, 0, 1):
    url = storage_lib.url_for(str(tmp_path), f'sqlite:///{tmp_path}/{len(orders)}.db')
    store = storage_lib.open_storage(url)
    search = study_lib.Search(name='g', trials=hyper.sweep('learning_rate', rates),
                              config=small_config, seed=seed)
    study = study_lib.open_study(store, search, url)
    trials = study.get_trials(deepcopy=False)
    order = [t.user_attrs['index'] for t in trials]
    declared = [rates[i] for i in order]
    assert [t.user_attrs['overrides']['learning_rate'] for t in trials] == declared
    assert [t.system_attrs['fixed_params']['learning_rate'] for t in trials] == declared
    orders.append(order)
  assert sorted(orders[0]) == list(range(6)) and orders[0] == study_lib.grid_order(6, 0)
  assert orders[0] == orders[1] and orders[0] != orders[2] and orders[0] != list(range(6))


# --- workers ---------------------------------------------------------------------------

POP = '''
import json, sys
from mnist_jax.search import storage
store = storage.open_storage(sys.argv[1])
study_id = store.get_study_id_from_name('pop')
got = []
while (popped := storage.pop(store, study_id)) is not None:
  got.append(popped[1].number)
print(json.dumps(got))
'''


@pytest.mark.parametrize('kind', ['sqlite', 'journal', POSTGRESQL])
def test_concurrent_pops_hand_each_queued_trial_to_one_worker(kind, tmp_path, request):
  """Four processes pop 120 queued trials as fast as they can: each trial goes
  to exactly one (SQLite without BEGIN IMMEDIATE handed trials out twice), on
  every storage a study can live in."""
  url = {'sqlite': f'sqlite:///{tmp_path / "pop.db"}',
         'journal': f'journal:{tmp_path / "pop.log"}'}.get(kind) or request.getfixturevalue(
             'postgres_url')
  store = storage_lib.open_storage(url)
  try:
    optuna.delete_study(study_name='pop', storage=store)
  except KeyError:
    pass
  queued = optuna.create_study(study_name='pop', storage=store)
  for i in range(120):
    queued.enqueue_trial({'x': i})
  procs = [subprocess.Popen([sys.executable, '-c', POP, url], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(4)]
  popped = []
  for p in procs:
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err[-2000:]
    popped += json.loads(out.strip().splitlines()[-1])
  assert sorted(popped) == list(range(120))



def _storage_url(kind, tmp_path, request):
  if kind == 'sqlite':
    return '', f'sqlite:///{tmp_path / "w" / "study.db"}'
  if kind == 'journal':
    url = f'journal:{tmp_path / "study.log"}'
    return url, url
  url = request.getfixturevalue('postgres_url')
  return url, url


# the pop that hands a trial to one worker is checked on every storage above, and a
# whole study on PostgreSQL by test_a_killed_workers_trial_is_retried_and_resumed
def test_three_workers_run_every_grid_trial_exactly_once(tmp_path, mnist_small_dir):
  url = f'sqlite:///{tmp_path / "w" / "study.db"}'   # the default: WORKDIR/study.db
  config = _config_file(tmp_path, mnist_small_dir)
  workdir = tmp_path / 'w'
  procs = [_worker(config, workdir, '--worker') for _ in range(3)]
  outs = [p.communicate(timeout=600) for p in procs]
  for p, (out, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  trained = collections.Counter(
      m for _, err in outs for m in re.findall(r'training in (\S+)', err))
  assert sorted(trained.values()) == [1] * 6, trained          # each trial trained once
  trials = _trials(url)
  assert len(trials) == 6                                        # no extra trial drawn
  assert {t.state for t in trials} == {optuna.trial.TrialState.COMPLETE}
  points = sorted((t.params['learning_rate'], t.params['seed']) for t in trials)
  assert points == sorted((lr, s) for lr in (1e-3, 3e-3, 1e-2) for s in (0, 1))
  with open(workdir / 'results.csv') as f:
    rows = list(csv.DictReader(f))
  vals = [float(r['best_val_accuracy']) for r in rows]
  assert len(rows) == 6 and vals == sorted(vals, reverse=True) and rows[0]['rank'] == '1'
  best = max(trials, key=lambda t: t.value)
  summary = json.loads((workdir / best.user_attrs['dir'] / 'summary.json').read_text())
  assert float(rows[0]['final_test_accuracy']) == pytest.approx(
      summary['test_accuracy_at_best_val'], abs=1e-4)
  assert best.user_attrs['final_test_accuracy'] == summary['test_accuracy_at_best_val']
  for err in (err for _, err in outs):          # worker lines: train/val, test only at the end
    for line in re.findall(r'trial \d+ complete: .*', err):
      assert 'best val accuracy' in line and 'train loss' in line and 'val loss' in line
      assert line.count('test') == 1 and 'final test accuracy' in line, line


@pytest.mark.parametrize('kind', ['sqlite', 'journal'])
def test_a_trial_popped_by_a_worker_that_never_beat_is_retried(kind, tmp_path, small_config):
  """A worker killed right after its pop, before its heartbeat thread ran: the
  trial still goes stale and is queued again (Optuna skips trials without any
  heartbeat, so the pop records one first)."""
  url = (f'sqlite:///{tmp_path / "s.db"}' if kind == 'sqlite'
         else f'journal:{tmp_path / "s.log"}')
  store = storage_lib.open_storage(url, 1, 2)
  search = study_lib.Search(name='s', trials=hyper.sweep('seed', [0]), config=small_config)
  study = study_lib.open_study(store, search, url)
  study_id = store.get_study_id_from_name('s')
  trial_id, frozen = storage_lib.pop(store, study_id)
  time.sleep(3)                                        # past the grace period, no beats
  optuna.storages.fail_stale_trials(study)
  trials = study.get_trials(deepcopy=False)
  assert [t.state.name for t in trials] == ['FAIL', 'WAITING']
  assert trials[1].system_attrs['failed_trial'] == frozen.number
  assert trials[1].user_attrs['index'] == 0


@pytest.mark.parametrize('kind', ['sqlite', POSTGRESQL])
def test_a_killed_workers_trial_is_retried_and_resumed(kind, tmp_path, mnist_small_dir,
                                                       request):
  """SIGKILL a worker after its trial's first epoch: another worker fails it
  once its heartbeat is stale, runs the queued retry from the checkpoint, and
  every grid point ends complete exactly once."""
  flag, url = _storage_url(kind, tmp_path, request)
  config = _config_file(tmp_path, mnist_small_dir, epochs=6, limit=1500,
                        grid="h.sweep('config.learning_rate', [1e-3, 3e-3])")
  workdir = tmp_path / 'w'
  args = ['--heartbeat_s=1', '--grace_s=3'] + (
      [f'--storage={flag}', f'--study_name=kill_{kind}'] if flag else [])
  victim = _worker(config, workdir, '--worker', *args)
  deadline, metrics = time.time() + 300, None
  while time.time() < deadline and metrics is None:   # a committed checkpoint: kill
    found = [p for p in glob.glob(str(workdir / '*' / 'checkpoints' / 'latest' / '*'))
             if os.path.basename(p).isdigit()]
    if found:
      metrics = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(found[0]))),
                             'metrics.jsonl')
    time.sleep(0.02)
  assert metrics is not None, victim.communicate()[1][-3000:]
  victim.send_signal(signal.SIGKILL)
  victim.communicate()
  killed_dir = os.path.basename(os.path.dirname(metrics))
  assert not os.path.exists(os.path.join(os.path.dirname(metrics), 'summary.json'))
  rescuer = _worker(config, workdir, *args)        # not --worker: waits for the whole study
  out, err = rescuer.communicate(timeout=600)
  assert rescuer.returncode == 0, err[-3000:]
  assert re.search(rf'Resuming \S*{re.escape(killed_dir)} from epoch [1-5]', err), err[-3000:]
  trials = _trials(url, name=f'kill_{kind}' if flag else 'tiny')
  states = collections.Counter(t.state.name for t in trials)
  assert states == {'COMPLETE': 2, 'FAIL': 1}, states
  failed = next(t for t in trials if t.state.name == 'FAIL')
  retry = next(t for t in trials if t.system_attrs.get('failed_trial') == failed.number)
  assert retry.state.name == 'COMPLETE' and retry.user_attrs['dir'] == killed_dir
  assert retry.params == failed.params
  epochs = [json.loads(l)['epoch'] for l in open(metrics)]
  assert epochs == [1, 2, 3, 4, 5, 6]                               # nothing trained twice
  table = (workdir / 'results.md').read_text()
  assert 'fail (worker died)' in table and f'| {failed.number} | complete |' not in table


def _tiny_mlp(config):
  config.data.train_limit = 300
  config.num_epochs = 2
  config.model.name = 'mlp'
  config.model.hidden = (32,)
  return config


def test_pruning_stops_a_lagging_trial_and_keeps_its_run(tmp_path, small_config):
  """ASHA stops η = 1e-6 (far behind η = 3e-3 after epoch 1); the pruned trial
  keeps its metrics, checkpoint and summary, and the table says pruned."""
  seed = next(s for s in range(10) if study_lib.grid_order(2, s) == [0, 1])  # 3e-3 first
  search = study_lib.Search(name='prune', trials=hyper.sweep('learning_rate', [3e-3, 1e-6]),
                            config=_tiny_mlp(small_config), pruner='asha', seed=seed)
  study_lib.check(search)
  url = storage_lib.url_for(str(tmp_path))
  store = storage_lib.open_storage(url)
  study_lib.open_study(store, search, url)
  ran = worker.work(store, search, str(tmp_path))
  assert [(n, s) for n, s, _ in ran] == [(0, 'complete'), (1, 'pruned')]
  lagging = tmp_path / 'learning_rate=1e-06'
  summary = json.loads((lagging / 'summary.json').read_text())
  assert summary['stopped_early'] and summary['epochs'] == 1
  assert os.path.isdir(lagging / 'checkpoints' / 'latest' / '1')
  assert len((lagging / 'metrics.jsonl').read_text().splitlines()) == 1
  trials = optuna.load_study(study_name='prune', storage=store).get_trials()
  assert trials[1].intermediate_values.keys() == {1} and trials[0].value > trials[1].value
  study_table.write(store, 'prune', str(tmp_path))
  rows = list(csv.DictReader(open(tmp_path / 'results.csv')))
  assert [(r['trial'], r['state'], r['epochs']) for r in rows] == [
      ('0', 'complete', '2'), ('1', 'pruned', '1')]
  # a retry of a finished trial reads its summary: nothing trained again
  assert worker.work(store, search, str(tmp_path)) == []


def test_a_worker_trains_popped_trials_as_one_vmapped_group(tmp_path, small_config):
  """--vectorize_trials=2 on a 3-point grid: two trials train as one group, the
  third alone; each ends complete exactly once with its own run directory."""
  search = study_lib.Search(name='v', config=_tiny_mlp(small_config),
                            trials=hyper.sweep('learning_rate', [1e-3, 2e-3, 3e-3]))
  url = storage_lib.url_for(str(tmp_path))
  store = storage_lib.open_storage(url)
  study_lib.open_study(store, search, url)
  ran = worker.work(store, search, str(tmp_path), vectorize=2)
  assert [(n, s, e) for n, s, e in ran] == [(0, 'complete', None), (1, 'complete', None),
                                           (2, 'complete', None)]
  trials = optuna.load_study(study_name='v', storage=store).get_trials()
  summaries = [json.loads((tmp_path / t.user_attrs['dir'] / 'summary.json').read_text())
               for t in trials]
  assert [s.get('vectorized_trials') for s in summaries] == [2, 2, None]
  assert [s['epochs'] for s in summaries] == [2, 2, 2]
  assert [t.value for t in trials] == [s['best_val_accuracy'] for s in summaries]
  assert len({t.user_attrs['dir'] for t in trials}) == 3


def test_pruning_a_member_of_a_vmapped_group_ends_only_its_trial(tmp_path, small_config):
  """η = 1e-6 popped with η = 3e-3 into one group: ASHA prunes it after epoch 1
  (its checkpoint and summary from then) while its partner trains on."""
  seed = next(s for s in range(10) if study_lib.grid_order(2, s) == [0, 1])  # 3e-3 first
  search = study_lib.Search(name='vp', config=_tiny_mlp(small_config), pruner='asha',
                            trials=hyper.sweep('learning_rate', [3e-3, 1e-6]), seed=seed)
  url = storage_lib.url_for(str(tmp_path))
  store = storage_lib.open_storage(url)
  study_lib.open_study(store, search, url)
  ran = worker.work(store, search, str(tmp_path), vectorize=2)
  assert [(n, s) for n, s, _ in ran] == [(0, 'complete'), (1, 'pruned')]
  lagging = json.loads((tmp_path / 'learning_rate=1e-06' / 'summary.json').read_text())
  partner = json.loads((tmp_path / 'learning_rate=0.003' / 'summary.json').read_text())
  assert lagging['stopped_early'] and lagging['epochs'] == 1 and partner['epochs'] == 2
  assert lagging['vectorized_trials'] == partner['vectorized_trials'] == 2
  assert os.path.isdir(tmp_path / 'learning_rate=1e-06' / 'checkpoints' / 'latest' / '1')


def test_random_sampler_draws_reproducible_values_from_the_space(tmp_path, small_config):
  small_config.data.train_limit = 100
  small_config.model.name = 'mlp'
  small_config.model.hidden = (16,)
  trials = hyper.random('learning_rate', hyper.loguniform(1e-4, 1e-2), n=2, seed=0)
  drawn = []
  for name in ('a', 'b'):
    search = study_lib.Search(name=name, trials=trials, config=small_config,
                              sampler='random', n_trials=2, seed=7)
    url = storage_lib.url_for(str(tmp_path))
    store = storage_lib.open_storage(url)
    study_lib.open_study(store, search, url)
    worker.work(store, search, str(tmp_path / name))
    done = optuna.load_study(study_name=name, storage=store).get_trials()
    assert all(t.state.name == 'COMPLETE' for t in done) and len(done) == 2
    drawn.append([t.params['learning_rate'] for t in done])
  assert drawn[0] == drawn[1] and drawn[0][0] != drawn[0][1]
  assert all(1e-4 <= v <= 1e-2 for v in drawn[0])
  assert sorted(os.listdir(tmp_path / 'a'))[0].startswith('0000-learning_rate=')


# --- bad input ---------------------------------------------------------------------------


def test_a_study_of_another_config_is_refused_and_left_alone(tmp_path, small_config):
  url = storage_lib.url_for(str(tmp_path))
  store = storage_lib.open_storage(url)
  first = study_lib.Search(name='s', trials=hyper.sweep('learning_rate', [1e-3, 2e-3]),
                           config=small_config)
  study_lib.open_study(store, first, url)
  other = small_config.copy_and_resolve_references()
  other.batch_size = 25
  for search in (study_lib.Search(name='s', trials=first.trials, config=other),
                 study_lib.Search(name='s', trials=hyper.sweep('learning_rate', [5e-3]),
                                  config=small_config),
                 study_lib.Search(name='s', trials=first.trials, config=small_config,
                                  pruner='asha')):
    with pytest.raises(UserError, match="study 's' .* was created by another config"):
      study_lib.open_study(store, search, url)
  assert len(optuna.load_study(study_name='s', storage=store).get_trials()) == 2
  assert study_lib.open_study(store, first, url).study_name == 's'   # the same one joins


@pytest.mark.parametrize('change,message', [
    ({'sampler': 'bayes'}, 'unknown --sampler=bayes; pass one of grid, random, tpe'),
    ({'pruner': 'median'}, 'unknown --pruner=median; pass one of none, asha, hyperband'),
    ({'sampler': 'grid', 'n_trials': 5}, '--n_trials=5: pass a positive count'),
])
def test_bad_search_flags_are_one_line(change, message, small_config):
  search = study_lib.Search(name='s', trials=hyper.sweep('seed', [0]), config=small_config,
                            **change)
  with pytest.raises(UserError, match=re.escape(message)):
    study_lib.check(search)


def test_bad_storage_urls_are_one_line(tmp_path):
  with pytest.raises(UserError, match='in a folder that does not exist'):
    storage_lib.open_storage(f'journal:{tmp_path}/no/such/study.log')
  with pytest.raises(UserError, match='neither a database URL nor journal:PATH'):
    storage_lib.open_storage('not a url')
  with pytest.raises(UserError, match='folder of .* does not exist'):
    storage_lib.open_storage(f'sqlite:///{tmp_path}/no/such/study.db')
  with pytest.raises(UserError, match='need heartbeat_s >= 1 and grace_s > heartbeat_s'):
    storage_lib.open_storage(f'sqlite:///{tmp_path}/study.db', 10, 5)
  assert os.listdir(tmp_path) == []


def test_a_missing_postgres_driver_names_the_extra(monkeypatch):
  monkeypatch.setitem(sys.modules, 'psycopg2', None)   # as if not installed
  with pytest.raises(UserError) as e:
    storage_lib.open_storage('postgresql+psycopg2://me:s3cret@127.0.0.1:1/db')
  assert str(e.value) == ('the study storage postgresql+psycopg2://me:***@127.0.0.1:1/db '
                          "needs the PostgreSQL driver psycopg2: pip install 'mnist_jax[postgres]'")


def test_cli_bad_input_is_one_line_and_writes_nothing(tmp_path, mnist_small_dir):
  """The command's refusals: one error line, exit 2, no password echoed, nothing
  written (the library's refusals: below and above; an unknown sweep key:
  tests/test_sweep.py)."""
  config = _config_file(tmp_path, mnist_small_dir)
  cases = [
      (['--storage=postgresql+psycopg2://me:s3cret@127.0.0.1:1/db'],
       'cannot open the study storage postgresql+psycopg2://me:***@127.0.0.1:1/db'),
      (['--trial=1', '--num_processes=2'], 'start one worker (or one --trial=N) per host'),
  ]
  for args, message in cases:
    proc = _worker(config, tmp_path / 'w', *args)
    out, err = proc.communicate(timeout=300)
    lines = [l for l in err.splitlines() if l.startswith('error:')]
    assert proc.returncode == 2 and len(lines) == 1 and message in lines[0], err[-2000:]
    assert 's3cret' not in err + out
    assert not (tmp_path / 'w').exists()                       # nothing written


def test_bad_trial_options_are_refused_before_anything_is_written(tmp_path, mnist_small_dir):
  from mnist_jax.config import files as config_files   # pylint: disable=g-import-not-at-top
  from mnist_jax.search import launch   # pylint: disable=g-import-not-at-top
  path = _config_file(tmp_path, mnist_small_dir)
  options = launch.Options(workdir=str(tmp_path / 'w'))
  with pytest.raises(UserError, match=re.escape(
      '--vectorize_trials=0; pass 1 (one trial at a time) or more')):
    launch.search_of(path, config_files.load(path),
                     dataclasses.replace(options, vectorize_trials=0))
  search = launch.search_of(path, config_files.load(path), options)
  with pytest.raises(UserError, match=re.escape(
      '--trial=6 but the study queues 6 trials; pass 0..5 (see --list)')):
    launch.run(search, dataclasses.replace(options, trial=6))
  assert not (tmp_path / 'w').exists()


def test_the_pruner_sees_the_validation_score_of_the_models_weights():
  """With model_weights='ema' the study is told val_accuracy_ema (the figure the
  best epoch is chosen by), not the raw weights' val_accuracy."""
  from mnist_jax.search import worker
  from mnist_jax.config import defaults

  class Trial:
    reported = []
    def report(self, value, step):
      self.reported.append((value, step))
    def should_prune(self):
      return False

  config = defaults.get_config()
  config.num_epochs = 3
  record = {'epoch': 1, 'val_accuracy': 0.5, 'val_accuracy_ema': 0.75}
  trial = Trial()
  config.model_weights = 'ema'
  worker._report(trial, record, config)
  config.model_weights = 'raw'
  worker._report(trial, record, config)
  assert trial.reported == [(0.75, 1), (0.5, 1)]
