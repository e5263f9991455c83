"""What every command shares: flag parsing with one-line errors, the one error
printer, multi-host and compilation-cache flags, quiet logs. Only commands import this.

Expected failures are ``UserError``s (errors.py); a command turns one into a
single line on stderr, ``error: <what is wrong; how to fix it>``, and exit
status 2 — no traceback. Anything else is a bug and keeps its traceback.
"""
import contextlib
import logging as logging_std
import sys

from absl import flags, logging

DISTRIBUTED_FLAGS = ('coordinator_address', 'num_processes', 'process_id')


def fail(message) -> None:
  """Prints ``error: message`` (whitespace collapsed) on stderr; exits with status 2."""
  print(f"error: {' '.join(str(message).split())}", file=sys.stderr)
  sys.exit(2)


def start() -> None:
  """What a command does first: quiet logs, then the compilation cache (before any JAX work)."""
  quiet_logs()
  use_compilation_cache()


@contextlib.contextmanager
def one_line_errors():
  """A UserError raised in the block becomes ``fail``'s one line and exit status 2."""
  from mnist_jax.errors import UserError  # pylint: disable=g-import-not-at-top
  try:
    yield
  except UserError as e:
    fail(e)


def parse_flags(argv, *, positional: bool = False):
  """absl flag parsing with bad flags and config paths/keys/values as one-line
  errors; positional arguments are refused unless ``positional``."""
  try:
    rest = flags.FLAGS(argv)
    if 'config' in flags.FLAGS and flags.FLAGS['config'].value is not None:
      flags.FLAGS['config'].value.keys()  # a bad config file raises only on access
  except flags.Error as e:
    fail(f'{e}; run with --helpfull for the flags')
  except (KeyError, AttributeError) as e:  # unknown --config.<key>
    message = str(e).strip('"\'').replace('\\n', ' ').replace("\\'", "'")
    fail(f'unknown config key {message}; see mnist_jax/config/defaults.py '
         'and the config file for the valid keys')
  except (OSError, ImportError, SyntaxError, TypeError, ValueError) as e:
    fail(f'cannot load the config ({type(e).__name__}: {e}); pass an existing '
         'configs/*.py file with --config')
  if len(rest) > 1 and not positional:
    fail(f'unexpected arguments {" ".join(rest[1:])}; pass only flags')
  return rest


def define_distributed_flags() -> None:
  """--coordinator_address / --num_processes / --process_id (parallel/distributed.py)."""
  flags.DEFINE_string('coordinator_address', None,
                      'HOST:PORT of process 0 for a multi-host run.')
  flags.DEFINE_integer('num_processes', None, 'Number of processes (hosts).')
  flags.DEFINE_integer('process_id', None, 'This process: 0 .. num_processes-1.')


def define_cache_flag() -> None:
  """--compilation_cache: JAX's persistent compilation cache (store/compile_cache.py)."""
  flags.DEFINE_string('compilation_cache', None,
                      'Directory of the persistent XLA compilation cache, or "off" '
                      '(default: $MNIST_JAX_COMPILATION_CACHE, else ~/.cache/mnist_jax/jax).')


def use_compilation_cache() -> None:
  """Turns the persistent compilation cache on as --compilation_cache says; before any JAX work."""
  from mnist_jax.store import compile_cache  # pylint: disable=g-import-not-at-top
  from mnist_jax.errors import UserError  # pylint: disable=g-import-not-at-top
  try:
    compile_cache.enable(compile_cache.where(flags.FLAGS['compilation_cache'].value))
  except UserError as e:
    fail(e)


def initialize_distributed() -> None:
  """Joins the multi-host runtime from the flags; call before any JAX work."""
  from mnist_jax.errors import UserError  # pylint: disable=g-import-not-at-top
  from mnist_jax.parallel import distributed  # pylint: disable=g-import-not-at-top
  try:
    distributed.initialize(*(flags.FLAGS[name].value for name in DISTRIBUTED_FLAGS))
  except UserError as e:
    fail(e)


# --- quiet logs ------------------------------------------------------------------
# Startup log lines a user need not act on, hidden for the command lines.
#
# On a machine without libtpu, JAX's first backend use probes the TPU plugin and
# logs at INFO from ``jax._src.xla_bridge``::
#
#   Unable to initialize backend 'tpu': INTERNAL: Failed to open libtpu.so:
#   libtpu.so: cannot open shared object file: No such file or directory
#
# Plain Python hides INFO, but ``absl.app.run`` sets the root logger to INFO, so
# every CLI printed it. ``quiet_startup_logs()`` puts a filter on that one logger
# (a logger's own filters run whatever the handler: absl's, pytest's, the user's)
# that drops only that record: libtpu.so is absent. A TPU that fails for any other
# reason (device busy, wrong libtpu) and every WARNING still show, and so does
# JAX's own "A Google TPU may be present on this machine ..." warning.


_LOGGER = 'jax._src.xla_bridge'
_PREFIX = "Unable to initialize backend 'tpu'"
_NO_LIBTPU = 'libtpu.so: cannot open shared object file'


class _NoLibtpuProbe(logging_std.Filter):
  """Drops the INFO record of JAX's failed probe for a libtpu.so that is not installed."""

  def filter(self, record):
    if record.levelno >= logging_std.WARNING:
      return True
    message = record.getMessage()
    return not (message.startswith(_PREFIX) and _NO_LIBTPU in message)


class _QuietOrbax(logging_std.Filter):
  """Drops orbax's INFO chatter (a dozen lines per restore) from the absl log."""

  def filter(self, record):
    return record.levelno >= logging_std.WARNING or 'orbax' not in record.pathname


def quiet_startup_logs() -> None:
  """Hides the 'no libtpu.so' INFO line; call before the first JAX backend use (idempotent)."""
  logger = logging_std.getLogger(_LOGGER)
  if not any(isinstance(f, _NoLibtpuProbe) for f in logger.filters):
    logger.addFilter(_NoLibtpuProbe())


def quiet_logs() -> None:
  """Hides start-up and library chatter a user need not act on (warnings stay):
  the 'no libtpu.so' line and orbax's INFO lines. Idempotent."""
  quiet_startup_logs()
  handler = logging.get_absl_handler()
  if not any(isinstance(f, _QuietOrbax) for f in handler.filters):
    handler.addFilter(_QuietOrbax())
