"""cli.quiet_startup_logs: the 'no libtpu.so' INFO line is gone, other log records are not."""
import logging
import os
import subprocess
import sys
import textwrap

import pytest

from mnist_jax import cli as cli_logs

# What our CLIs do: absl.app.run (root logger at INFO), then the first backend use.
_SNIPPET = textwrap.dedent("""
    from absl import app

    def main(argv):
      if argv[1:] == ['quiet']:
        from mnist_jax.cli import quiet_startup_logs
        quiet_startup_logs()
        quiet_startup_logs()  # idempotent
      import jax
      print(jax.devices())

    app.run(main)
""")


def _has_libtpu() -> bool:
  """Whether a libtpu package is installed (then the probe line never appears)."""
  try:
    import libtpu  # pylint: disable=g-import-not-at-top,unused-import
    return True
  except ImportError:
    return False


def _stderr(*args) -> str:
  """stderr of the snippet run on CPU-only JAX with the given args."""
  env = {k: v for k, v in os.environ.items() if k != 'JAX_PLATFORMS'}
  result = subprocess.run([sys.executable, '-c', _SNIPPET, *args], env=env,
                          capture_output=True, text=True, timeout=120, check=True)
  return result.stderr


@pytest.mark.skipif(_has_libtpu(), reason='libtpu is installed: no probe failure')
def test_cli_quiet_startup_logs_hides_libtpu_line():
  assert "Unable to initialize backend 'tpu'" in _stderr()  # control: it does appear
  quiet = _stderr('quiet')
  assert 'libtpu' not in quiet and "backend 'tpu'" not in quiet


def _record(message, level=logging.INFO):
  return logging.LogRecord(cli_logs._LOGGER, level, 'xla_bridge.py', 1, message,
                           None, None)


def test_cli_filter_drops_only_the_missing_libtpu_record():
  keep = cli_logs._NoLibtpuProbe().filter
  assert not keep(_record("Unable to initialize backend 'tpu': INTERNAL: Failed to "
                          'open libtpu.so: libtpu.so: cannot open shared object '
                          'file: No such file or directory'))
  assert keep(_record("Unable to initialize backend 'tpu': ABORTED: The TPU is "
                      'already in use by process with pid 42'))
  assert keep(_record("Unable to initialize backend 'cuda': no CUDA devices"))
  assert keep(_record("Unable to initialize backend 'tpu': libtpu.so: cannot open "
                      'shared object file', logging.WARNING))


def test_cli_quiet_startup_logs_is_idempotent():
  logger = logging.getLogger(cli_logs._LOGGER)
  before = list(logger.filters)
  try:
    cli_logs.quiet_startup_logs()
    cli_logs.quiet_startup_logs()
    assert len([f for f in logger.filters
                if isinstance(f, cli_logs._NoLibtpuProbe)]) == 1
  finally:
    for f in [f for f in logger.filters if f not in before]:
      logger.removeFilter(f)
