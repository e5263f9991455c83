"""Command line: flags -> config -> engine.trainer (an ensemble: engine.stacked) -> plots.

  python -m mnist_jax.main --config=configs/lenet.py [--workdir=DIR] \
      [--config.learning_rate=3e-3 --config.num_epochs=5 ...]

Without --workdir a new run directory runs/<config>_<YYYYmmdd-HHMMSS> is made;
an existing workdir with checkpoints is resumed. Expected errors print one line
and exit with status 2. A checkpoint is evaluated by ``python -m mnist_jax.evaluate``.
"""
import os
import time

from absl import app, flags, logging
from ml_collections import config_flags

from mnist_jax import cli
from mnist_jax.errors import UserError

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file (configs/*.py).',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Run directory (default: a new runs/<name>_<time>).')
cli.define_distributed_flags()
cli.define_cache_flag()


def default_workdir(config_path: str) -> str:
  name = os.path.splitext(os.path.basename(config_path.split(':')[0]))[0]
  return os.path.join('runs', f"{name}_{time.strftime('%Y%m%d-%H%M%S')}")


def main(argv):
  del argv
  cli.quiet_logs()
  cli.use_compilation_cache()
  cli.initialize_distributed()  # multi-host: before any other JAX call
  if _CONFIG.value is None:
    cli.fail('--config is required to train; pass e.g. --config=configs/lenet.py')
  from mnist_jax.engine import ensemble, stacked, trainer  # pylint: disable=g-import-not-at-top  (keeps --help fast)
  config = _CONFIG.value
  workdir = _WORKDIR.value or default_workdir(flags.FLAGS['config'].config_filename)
  print(f'workdir: {workdir}', flush=True)
  try:
    if ensemble.size(config) > 1:   # its members train as one vmapped program
      result = stacked.train([config], [workdir])[0]
    else:
      result = trainer.train_and_evaluate(config, workdir)
    if result.error is not None:
      raise result.error
    if config.write_plots:
      from mnist_jax.inspection import figures  # pylint: disable=g-import-not-at-top  (matplotlib is slow to import)
      figures.write_all(workdir, config, result.state, result.data)
  except UserError as e:
    logging.flush()
    cli.fail(e)
  summary = result.summary
  print(f"test accuracy {summary['test_accuracy']:.4f} after {summary['epochs']} epochs "
        f"({summary['train_time_s']:.1f} s training); summary: "
        f"{os.path.join(workdir, 'summary.json')}")


if __name__ == '__main__':
  app.run(main, flags_parser=cli.parse_flags)
