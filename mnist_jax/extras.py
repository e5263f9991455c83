"""The optional packages: which extra of setup.cfg brings each, and the one error when one is missing.

``pip install mnist_jax`` trains, evaluates, sweeps, plots and serves MNIST. Three parts
need packages it leaves out, each in an extra:

  extra        packages                          needed by
  tfds         tensorflow-datasets, tensorflow   config.data.source='tfds' (TensorFlow reads
                                                 TFDS's tfrecord copies and prepares downloads)
  postgres     psycopg2-binary                   postgresql+psycopg2:// study storages
  tensorboard  tensorboard                       the viewer (tensorboard --logdir runs/)

``require(module, what)`` imports one of them or raises the one UserError that says
which extra to install.
"""
import importlib

from mnist_jax.errors import UserError

# top-level module -> (extra, what it is called in the message)
EXTRAS = {
    'tensorflow_datasets': ('tfds', 'TensorFlow Datasets'),
    'tensorflow': ('tfds', 'TensorFlow'),
    'psycopg2': ('postgres', 'the PostgreSQL driver psycopg2'),
}


def missing(module: str, what: str) -> UserError:
  """"<what> needs <package>: pip install 'mnist_jax[<extra>]'" for a module of ``EXTRAS``."""
  extra, package = EXTRAS[module]
  return UserError(f"{what} needs {package}: pip install 'mnist_jax[{extra}]'")


def require(module: str, what: str):
  """``module`` (a key of ``EXTRAS``) imported, or ``missing(module, what)`` raised when
  it is not installed. A module it imports that is missing is a broken install and
  keeps its own error."""
  try:
    return importlib.import_module(module)
  except ModuleNotFoundError as e:
    if e.name != module:
      raise
    raise missing(module, what) from None
