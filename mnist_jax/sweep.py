"""Command line: hyperparameter sweeps over a config's ``get_hyper(h)`` (search/runner.py).

  python -m mnist_jax.sweep --config=configs/lenet.py --workdir=sweeps/lenet \
      [--config.num_epochs=3 ...]        # overrides for every trial
  python -m mnist_jax.sweep --config=... --list | --num_trials   # no --workdir needed
  python -m mnist_jax.sweep ... --trial=N | --vectorize
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
cli.define_distributed_flags()
cli.define_cache_flag()


def _draw_plots(config, workdir, outcome, data):
  if config.write_plots:
    from mnist_jax.inspection import figures  # pylint: disable=g-import-not-at-top
    figures.write_all(workdir, config, outcome.state, data)


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
