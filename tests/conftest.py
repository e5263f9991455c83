"""Shared fixtures: the committed small MNIST, the optional full data, a small config.

  mnist_small_dir  tests/fixtures/mnist_small: the first 5,000 train / 1,000 test
                   images of the real MNIST (made by tests/fixtures/make_fixture.py)
  full_data_dir    $MNIST_JAX_FULL_DATA, a folder with mnist/ (IDX files) and
                   tensorflow_datasets/ (the TFDS copy); tests using it skip
                   when it is not set
  small_config     defaults.get_config() on the small fixture (IDX source,
                   val_size=500, one short epoch); a fresh copy per test
  cpu_devices_env  env(n): the environment of a child JAX process with n CPU
                   devices (the data-parallel and multi-host checks)
  training_env     the environment of a child process that trains for hundreds
                   of steps: LLVM at level 1 (TRAINING_XLA_FLAGS)
  lenet_run        one LeNet-5 run trained by the bare command, read by the tests
                   of main, plots, predict and serve: trained once per test run

Compiled programs are shared across the tests: the whole test run (this process,
its pytest-xdist workers and every command a test starts, through
$MNIST_JAX_COMPILATION_CACHE) uses one persistent compilation cache in a fresh
temporary directory, so a train step that many tests build compiles once. A
program is looked up by its hash, never by a test's name: a cache hit runs the
same executable a compilation would give.
"""
import atexit
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import typing

import filelock
import pytest

# XLA flags of the whole test run, set before JAX starts (the commands the tests
# start inherit them): the tests check math, not speed. The backend's LLVM at -O0
# compiles the suite's many small programs much faster (the code it makes runs
# slower, which the tests' small data hardly feel), and one compute thread per
# process keeps two pytest-xdist workers from fighting over the cores; without
# LLVM's expensive passes the compilations take a little less time again, for
# the same results. XLA:CPU's loop emitters (fusion emitters off) compile the
# model zoo's programs in about two thirds of the processor time of its MLIR
# fusion emitters; they may compute one value in two fusions a rounding apart, which
# the code must not depend on (tests/nn/test_fast_layers.py checks the max-pool
# gradient under them). A flag already in XLA_FLAGS comes after these, so it wins.
TEST_XLA_FLAGS = ('--xla_backend_optimization_level=0 --xla_cpu_multi_thread_eigen=false '
                  '--xla_llvm_disable_expensive_passes=true '
                  '--xla_cpu_use_fusion_emitters=false')
# A command that trains for hundreds of steps is the exception: at LLVM's level 1 its
# programs compile a little slower and run about three times faster, which about
# halves its processor time. The tests that start such a command give it these flags
# (training_env); its results are then compared only with what reads its files,
# never bit for bit with a level-0 run.
TRAINING_XLA_FLAGS = TEST_XLA_FLAGS.replace('--xla_backend_optimization_level=0',
                                            '--xla_backend_optimization_level=1')
_USER_FLAGS = 'MNIST_JAX_TEST_USER_XLA_FLAGS'   # as the first pytest process found them
os.environ.setdefault(_USER_FLAGS, os.environ.get('XLA_FLAGS', ''))
USER_XLA_FLAGS = os.environ[_USER_FLAGS]
os.environ['XLA_FLAGS'] = f'{TEST_XLA_FLAGS} {USER_XLA_FLAGS}'.strip()

from mnist_jax.config import defaults  # pylint: disable=wrong-import-position
from mnist_jax.store import compile_cache  # pylint: disable=wrong-import-position

_SHARED = 'MNIST_JAX_TEST_RUN_DIR'   # this test run's folder, common to its processes


def _remove(folder):
  """Ends what a test started in the background and still runs, then removes the folder."""
  try:
    with open(os.path.join(folder, 'background.pid')) as f:
      os.killpg(int(f.read()), signal.SIGKILL)   # its own process group: the command too
  except (OSError, ValueError):
    pass
  shutil.rmtree(folder, ignore_errors=True)


if _SHARED not in os.environ:  # the first pytest process (with xdist: the controller)
  os.environ[_SHARED] = tempfile.mkdtemp(prefix='mnist_jax_test_run_')
  atexit.register(lambda: _remove(os.environ[_SHARED]))
SHARED = os.environ[_SHARED]
os.environ[compile_cache.ENV] = os.path.join(SHARED, 'xla_cache')  # for the commands too
compile_cache.enable(os.environ[compile_cache.ENV])

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, 'tests', 'fixtures')
FULL_DATA_ENV = 'MNIST_JAX_FULL_DATA'


def pytest_itemcollected(item):
  """Marks each test by what it needs beyond the clone, from the fixtures it uses:
  full_data (full_data_dir), postgres (a PostgreSQL server), chromium (the browser);
  e.g. ``-m 'not postgres and not chromium'`` leaves them out."""
  names = set(item.fixturenames)
  params = getattr(item, 'callspec', None)
  if 'full_data_dir' in names:
    item.add_marker('full_data')
  if 'postgres_url' in names or (params and 'postgresql' in params.params.values()):
    item.add_marker('postgres')
  if 'browser' in names:
    item.add_marker('chromium')


@pytest.fixture(scope='session')
def cpu_devices_env():
  """env(n): the environment for a child JAX process with n CPU devices: the test
  run's XLA flags, then the device count."""
  def env(n: int) -> dict:
    flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={n}"
    return dict(os.environ, JAX_PLATFORMS='cpu', XLA_FLAGS=flags)
  return env


def _training_env() -> dict:
  return dict(os.environ, XLA_FLAGS=f'{TRAINING_XLA_FLAGS} {USER_XLA_FLAGS}'.strip())


@pytest.fixture(scope='session')
def training_env():
  """The environment of a child process that trains for hundreds of steps: the
  test run's environment with TRAINING_XLA_FLAGS (a flag set outside still wins)."""
  return _training_env()


LENET_RUN = os.path.join(SHARED, 'lenet_run')
LENET_RUN_FLAGS = (
    '--config=configs/lenet.py', '--config.learning_rate=4e-3', '--config.data.source=idx',
    f"--config.data.data_dir={os.path.join(FIXTURES, 'mnist_small')}",
    '--config.data.download=False', '--config.data.val_size=500', '--config.batch_size=50',
    '--config.eval_batch_size=500', '--config.num_epochs=3', '--config.log_every_steps=45',
    '--config.write_plots=True')
# runs a command with its output in stdout.txt / stderr.txt, then writes its exit status
_RECORDED = ('import subprocess, sys\n'
             'with open("stdout.txt", "w") as out, open("stderr.txt", "w") as err:\n'
             '  status = subprocess.call(sys.argv[1:], stdout=out, stderr=err)\n'
             'open("status.tmp", "w").write(str(status))\n'
             'import os; os.replace("status.tmp", "status.txt")\n')


def _start_lenet_run() -> None:
  """Starts lenet_run's command in the background, once per test run (a file lock
  decides which process starts it)."""
  with filelock.FileLock(LENET_RUN + '.lock'):
    if os.path.exists(LENET_RUN):
      return
    shutil.copytree(os.path.join(ROOT, 'configs'), os.path.join(LENET_RUN, 'configs'))
    proc = subprocess.Popen(
        [sys.executable, '-c', _RECORDED, sys.executable, '-m', 'mnist_jax.main',
         *LENET_RUN_FLAGS], cwd=LENET_RUN, env=_training_env(), stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    with open(os.path.join(SHARED, 'background.pid'), 'w') as f:
      f.write(str(proc.pid))


@pytest.hookimpl(trylast=True)   # after -k / -m have deselected
def pytest_collection_modifyitems(config, items):
  """When a selected test reads lenet_run, its command starts now, in the
  background, so it is trained by the time the first such test runs (in a
  whole-suite run, minutes later) and no worker waits for it."""
  if not config.option.collectonly and any('lenet_run' in i.fixturenames for i in items):
    _start_lenet_run()


class CommandRun(typing.NamedTuple):
  workdir: str   # the run directory the command made
  stdout: str
  stderr: str


@pytest.fixture(scope='session')
def lenet_run() -> CommandRun:
  """LeNet-5 trained as a user trains it: ``python -m mnist_jax.main
  --config=configs/lenet.py`` without --workdir (so in runs/lenet_*), at η = 4e-3
  with the config's augmentation, 3 epochs of 90 steps on the real-MNIST fixture
  (about 97 % test accuracy: a mouse-drawn digit is easy), plots on.

  Read by the tests of main, plots, predict and serve, so it is trained once per
  test run: the command starts in the background when such a test is collected
  (pytest_collection_modifyitems) and this waits for its exit status. The tests only
  read it; a test that rewrites part of a run works on a copy."""
  _start_lenet_run()
  status = os.path.join(LENET_RUN, 'status.txt')
  deadline = time.time() + 600
  while not os.path.exists(status) and time.time() < deadline:
    time.sleep(0.1)
  assert os.path.exists(status), 'the lenet_run command did not end in 600 s'
  with open(os.path.join(LENET_RUN, 'stdout.txt')) as f:
    stdout = f.read()
  with open(os.path.join(LENET_RUN, 'stderr.txt')) as f:
    stderr = f.read()
  with open(status) as f:
    assert f.read() == '0', stderr[-3000:]
  runs = os.listdir(os.path.join(LENET_RUN, 'runs'))
  assert len(runs) == 1, runs
  return CommandRun(os.path.join(LENET_RUN, 'runs', runs[0]), stdout, stderr)


@pytest.fixture(scope='session')
def mnist_small_dir() -> str:
  return os.path.join(FIXTURES, 'mnist_small')


@pytest.fixture(scope='session')
def full_data_dir() -> str:
  path = os.environ.get(FULL_DATA_ENV)
  if not path:
    pytest.skip(f'{FULL_DATA_ENV} is not set: point it at a folder with mnist/ and '
                'tensorflow_datasets/ (.ci/run sets it) to run the '
                'full-dataset tests')
  if not os.path.isdir(os.path.join(path, 'mnist')):
    pytest.fail(f'{FULL_DATA_ENV}={path} has no mnist/ folder; point it at a folder '
                'with mnist/ (the four IDX files) and tensorflow_datasets/')
  return os.path.abspath(path)


@pytest.fixture
def small_config(mnist_small_dir):
  """A fast config on the small fixture: 4,500 train / 500 val / 1,000 test images,
  a small MLP (784 -> 64 -> 10: what the engine does is the same for every model; a
  test about a convolutional model sets config.model itself)."""
  config = defaults.get_config()
  config.model.name, config.model.hidden = 'mlp', (64,)
  config.data.source = 'idx'
  config.data.data_dir = mnist_small_dir
  config.data.download = False
  config.data.val_size = 500
  config.batch_size = 50
  config.eval_batch_size = 500
  config.num_epochs = 1
  config.log_every_steps = 30
  config.write_plots = False
  return config


@pytest.fixture
def script_val_accuracy(monkeypatch):
  """Makes the trainer see the given validation accuracies, one per evaluation of
  'val' in order (the rest of each record is the real pass's): a way to place
  the best epoch where a test needs it. ``script(values)`` returns ``undo()``."""
  from mnist_jax.engine import evaluation
  real = evaluation.evaluate

  def script(values):
    scripted = iter(values)

    def fake(fn, state, splits):
      out = real(fn, state, splits)
      if 'val' in out:
        out['val']['model']['raw']['accuracy'] = next(scripted)
      return out

    monkeypatch.setattr(evaluation, 'evaluate', fake)
    return lambda: monkeypatch.setattr(evaluation, 'evaluate', real)
  return script
