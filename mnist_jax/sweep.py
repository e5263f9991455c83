"""Command line: hyperparameter search over a config's ``get_hyper(h)``.

  python -m mnist_jax.sweep --config=configs/lenet.py --workdir=sweeps/lenet \
      [--config.num_epochs=3 ...]        # overrides for every trial
      [--sampler=grid|random|tpe --n_trials=N --pruner=none|asha|hyperband]
      [--storage=postgresql+psycopg2://... | journal:PATH] [--worker] [--vectorize_trials=K]
  python -m mnist_jax.sweep --config=... --list | --num_trials   # no --workdir needed
  python -m mnist_jax.sweep ... --trial=N | --vectorize          # without a study

A study (search/study.py) lives in WORKDIR/study.db unless --storage names
another; any number of processes with the same flags work on it together.
--trial / --vectorize run the list directly (search/runner.py).
"""
import json
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from mnist_jax import cli
from mnist_jax.errors import UserError

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file (configs/*.py).',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Folder for the trials and the results table.')
_TRIAL = flags.DEFINE_integer('trial', None, 'Run only trial N (0-based; see --list).')
_LIST = flags.DEFINE_bool('list', False, 'Print the trials and exit.')
_NUM_TRIALS = flags.DEFINE_bool('num_trials', False, 'Print the number of trials and exit.')
_VECTORIZE = flags.DEFINE_bool('vectorize', False,
                               'Train trials that share an architecture at once (jax.vmap).')
_STORAGE = flags.DEFINE_string('storage', '', 'The study\'s storage: a database URL '
                               '(postgresql+psycopg2://user:pass@host/db) or journal:PATH '
                               '(default: sqlite in WORKDIR/study.db).')
_STUDY = flags.DEFINE_string('study_name', None, 'The study (default: the config file\'s name).')
_SAMPLER = flags.DEFINE_string('sampler', 'grid', 'grid | random | tpe')
_PRUNER = flags.DEFINE_string('pruner', 'none', 'none | asha | hyperband (per epoch)')
_N_TRIALS = flags.DEFINE_integer('n_trials', 0, 'random / tpe: trials to draw '
                                 '(default: as many as get_hyper lists).')
_SEED = flags.DEFINE_integer('sampler_seed', 0, 'Seed of the sampler: the grid\'s queue '
                             'order, the random / TPE draws.')
_WORKER = flags.DEFINE_bool('worker', False, 'One of many workers: stop when no trial is '
                            'left to pop (default: wait until the whole study is done).')
_VECTORIZE_TRIALS = flags.DEFINE_integer(
    'vectorize_trials', 1, 'A study worker pops up to this many trials at once and trains '
    'those sharing an architecture as one vmapped group.')
_HEARTBEAT = flags.DEFINE_integer('heartbeat_s', 30, 'Seconds between a worker\'s heartbeats.')
_GRACE = flags.DEFINE_integer('grace_s', 120, 'A running trial without a heartbeat for this '
                              'long belongs to a dead worker and is retried.')
cli.define_distributed_flags()
cli.define_cache_flag()


def _draw_plots(config, workdir, outcome, data):
  if config.write_plots:
    from mnist_jax.inspection import figures  # pylint: disable=g-import-not-at-top
    figures.write_all(workdir, config, outcome.state, data)


def _study(config_path, trials, workdir):
  """Runs this process's share of the study; returns (ran, table path)."""
  import optuna  # pylint: disable=g-import-not-at-top
  from mnist_jax.search import storage, study, study_table  # pylint: disable=g-import-not-at-top
  optuna.logging.set_verbosity(optuna.logging.WARNING)   # our log says what each trial does
  path = config_path.split(':')[0]
  search = study.Search(
      name=_STUDY.value or os.path.splitext(os.path.basename(path))[0], trials=trials,
      config=_CONFIG.value, sampler=_SAMPLER.value, pruner=_PRUNER.value,
      n_trials=_N_TRIALS.value, seed=_SEED.value, source=path)
  study.check(search)
  if _VECTORIZE_TRIALS.value < 1:
    raise UserError(f'--vectorize_trials={_VECTORIZE_TRIALS.value}; pass 1 (one trial at a '
                    'time) or more')
  if any(flags.FLAGS[name].value is not None for name in cli.DISTRIBUTED_FLAGS):
    raise UserError('a study worker is one process; start one worker per host instead of '
                    'passing --num_processes / --coordinator_address')
  if not _STORAGE.value:
    os.makedirs(workdir, exist_ok=True)
  url = storage.url_for(workdir, _STORAGE.value)
  store = storage.open_storage(url, _HEARTBEAT.value, _GRACE.value)
  study.open_study(store, search, storage.redact(url))
  write = lambda: study_table.write(store, search.name, workdir)
  ran = study.work(store, search, workdir, wait=not _WORKER.value, on_trained=_draw_plots,
                   after_each=write, vectorize=_VECTORIZE_TRIALS.value)
  table = write()
  board = url[len(storage.JOURNAL):] if url.startswith(storage.JOURNAL) else storage.redact(url)
  print(f'study {search.name} in {storage.redact(url)}; dashboard: optuna-dashboard {board}')
  return [(f'trial {n} ({state})', error) for n, state, error in ran], table


def main(argv):
  del argv
  cli.quiet_logs()
  cli.use_compilation_cache()
  from mnist_jax.search import hyper, runner  # pylint: disable=g-import-not-at-top
  try:
    trials = runner.load_trials(flags.FLAGS['config'].config_filename)
    configs = [hyper.apply(_CONFIG.value, t) for t in trials]  # unknown keys fail here
    if _LIST.value:
      for i, t in enumerate(trials):
        print(f'{i}\t{hyper.trial_name(t)}\t{json.dumps(t, sort_keys=True)}')
      return
    if _NUM_TRIALS.value:
      print(len(trials))
      return
    workdir = _WORKDIR.value
    if not workdir:
      raise UserError('the sweep needs --workdir; pass the folder for its trials')
    if _TRIAL.value is None and not _VECTORIZE.value:
      ran, table = _study(flags.FLAGS['config'].config_filename, trials, workdir)
      _report(ran, table)
      return
    cli.initialize_distributed()
    indices = None
    if _TRIAL.value is not None:
      if not 0 <= _TRIAL.value < len(trials):
        raise UserError(f'--trial={_TRIAL.value} but the sweep has {len(trials)} trials; '
                        f'pass 0..{len(trials) - 1} (see --list)')
      indices = [_TRIAL.value]
    ran = runner.run_trials(configs, trials, workdir, indices, vectorize=_VECTORIZE.value,
                     on_trained=_draw_plots)
    table = runner.write_table(workdir) if os.path.isdir(workdir) else None
  except UserError as e:
    logging.flush()
    cli.fail(e)
  _report(ran, table)


def _report(ran, table):
  failed = [name for name, error in ran if error is not None]
  print(f'ran {len(ran)} trial(s), {len(failed)} failed; results: {table}')
  for name, error in ran:
    if error is not None:
      print(f'  {name}: {error}')
  if failed:
    sys.exit(1)


if __name__ == '__main__':
  flags.mark_flags_as_required(['config'])
  app.run(main, flags_parser=cli.parse_flags)
