"""Command line: flags -> config -> loop.train_and_evaluate. No logic lives here.

  python -m mnist_jax.main --config=configs/lenet.py [--workdir=DIR] \
      [--config.learning_rate=3e-3 --config.num_epochs=5 ...]

Without --workdir a new run directory runs/<config>_<YYYYmmdd-HHMMSS> is made;
an existing workdir with checkpoints is resumed. Expected errors print one line
and exit with status 2.
"""
import json
import os
import sys
import time

from absl import app, flags, logging
from ml_collections import config_flags

from mnist_jax import distributed, runs
from mnist_jax.errors import UserError

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file (configs/*.py).',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Run directory (default: a new runs/<name>_<time>).')
_MODE = flags.DEFINE_enum('mode', 'train', ['train', 'eval'],
                          'train, or eval: test metrics of a checkpoint of --workdir.')
_WHICH = flags.DEFINE_enum('which', 'best', ['best', 'latest'], 'Checkpoint for --mode=eval.')
distributed.define_flags()  # --coordinator_address, --num_processes, --process_id


def default_workdir(config_path: str) -> str:
  name = os.path.splitext(os.path.basename(config_path.split(':')[0]))[0]
  return os.path.join('runs', f"{name}_{time.strftime('%Y%m%d-%H%M%S')}")


def parse_flags(argv):
  """absl flag parsing with bad config paths/keys/values as one-line errors."""
  try:
    rest = flags.FLAGS(argv)
    if flags.FLAGS['config'].value is not None:
      flags.FLAGS['config'].value.keys()  # a bad config file raises only on access
    return rest
  except flags.Error as e:
    fail(f'{e}; run with --helpfull for the flags')
  except (KeyError, AttributeError) as e:  # unknown --config.<key>
    message = str(e).strip('"\'').replace('\\n', ' ').replace("\\'", "'")
    fail(f'unknown config key {message}; see mnist_jax/defaults.py '
          'and the config file for the valid keys')
  except (OSError, ImportError, SyntaxError, TypeError, ValueError) as e:
    fail(f'cannot load the config ({type(e).__name__}: {e}); pass an existing '
          'configs/*.py file with --config')


def fail(message: str):
  """Prints one line (whitespace collapsed) and exits with status 2."""
  print(f"error: {' '.join(str(message).split())}", file=sys.stderr)
  sys.exit(2)


def main(argv):
  runs.quiet_orbax_logs()
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  try:
    distributed.initialize_from_flags()  # multi-host: before any other JAX call
  except UserError as e:
    fail(str(e))
  if _MODE.value == 'eval':
    return evaluate_checkpoint()
  if _CONFIG.value is None:
    fail('--config is required to train; pass e.g. --config=configs/lenet.py')
  from mnist_jax import loop  # pylint: disable=g-import-not-at-top  (keeps --help fast)
  workdir = _WORKDIR.value or default_workdir(flags.FLAGS['config'].config_filename)
  print(f'workdir: {workdir}', flush=True)
  try:
    summary = loop.train_and_evaluate(_CONFIG.value, workdir)
  except UserError as e:
    logging.flush()
    fail(str(e))
  print(f"test accuracy {summary['test_accuracy']:.4f} after {summary['epochs']} epochs "
        f"({summary['train_time_s']:.1f} s training); summary: "
        f"{os.path.join(workdir, 'summary.json')}")


def evaluate_checkpoint():
  """--mode=eval: validation and test metrics of the best/latest checkpoint."""
  from mnist_jax import evaluate  # pylint: disable=g-import-not-at-top
  if not _WORKDIR.value:
    fail('--mode=eval needs --workdir=DIR of a run with checkpoints')
  try:
    result = evaluate.run(_WORKDIR.value, _WHICH.value)
  except UserError as e:
    fail(str(e))
  print(json.dumps(result, sort_keys=True))
  print(evaluate.format_line(result))


def run():
  app.run(main, flags_parser=parse_flags)


if __name__ == '__main__':
  run()
