"""Command line: hyperparameter search over a config's ``get_hyper(h)`` (an Optuna study).

  python -m mnist_jax.sweep --config=configs/lenet.py --workdir=sweeps/lenet \
      [--config.num_epochs=3 ...]        # overrides for every trial
      [--sampler=grid|random|tpe --n_trials=N --pruner=none|asha|hyperband]
      [--storage=postgresql+psycopg2://... | journal:PATH] [--worker] [--vectorize_trials=K]
  python -m mnist_jax.sweep --config=... --list | --num_trials   # the queue; no --workdir
  python -m mnist_jax.sweep ... --trial=N                        # queued trial N only
  python -m mnist_jax.sweep ... --vectorize                      # all at once, vmapped

One study (search/study.py) in WORKDIR/study.db unless --storage names another:
any number of processes with the same flags, workers and --trial=N alike, take
trials from its one queue and rewrite its one table (search/launch.py).
"""
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from mnist_jax import cli
from mnist_jax.errors import UserError

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file (configs/*.py).',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Folder for the trials and the results table.')
_TRIAL = flags.DEFINE_integer('trial', None, 'Run only queued trial N of the study (0-based; '
                              'line N of --list).')
_LIST = flags.DEFINE_bool('list', False, 'Print the queued trials and exit.')
_NUM_TRIALS = flags.DEFINE_bool('num_trials', False, 'Print the number of queued trials and exit.')
_VECTORIZE = flags.DEFINE_bool('vectorize', False, 'Pop every queued trial at once and train '
                               'those sharing an architecture together (jax.vmap): '
                               '--vectorize_trials=<all>.')
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


def main(argv):
  del argv
  cli.start()
  import optuna  # pylint: disable=g-import-not-at-top
  from mnist_jax.search import launch  # pylint: disable=g-import-not-at-top
  optuna.logging.set_verbosity(optuna.logging.WARNING)   # our log says what each trial does
  options = launch.Options(
      workdir=_WORKDIR.value or '', storage=_STORAGE.value, study_name=_STUDY.value or '',
      sampler=_SAMPLER.value, pruner=_PRUNER.value, n_trials=_N_TRIALS.value,
      seed=_SEED.value, worker=_WORKER.value, vectorize=_VECTORIZE.value,
      vectorize_trials=_VECTORIZE_TRIALS.value, trial=_TRIAL.value,
      heartbeat_s=_HEARTBEAT.value, grace_s=_GRACE.value)
  try:
    search = launch.search_of(flags.FLAGS['config'].config_filename, _CONFIG.value, options)
    if _LIST.value or _NUM_TRIALS.value:
      print('\n'.join(launch.listing(search)) if _LIST.value else search.size)
      return
    if any(flags.FLAGS[name].value is not None for name in cli.DISTRIBUTED_FLAGS):
      raise UserError('a sweep process trains its trials on one host; start one worker '
                      '(or one --trial=N) per host instead of passing --num_processes / '
                      '--coordinator_address')
    ran, table, where = launch.run(search, options, on_trained=_draw_plots)
  except UserError as e:
    logging.flush()
    cli.fail(e)
  print(where)
  lines, ok = launch.report(ran, table)
  print('\n'.join(lines))
  if not ok:
    sys.exit(1)


if __name__ == '__main__':
  flags.mark_flags_as_required(['config'])
  app.run(main, flags_parser=cli.parse_flags)
