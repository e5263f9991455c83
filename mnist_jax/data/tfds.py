"""The tensorflow-datasets source: any 28x28x1 TFDS image-classification set.

``mnist`` (default), ``fashion_mnist``, ``kmnist``, ... are read whole into numpy
(``batch_size=-1``): images uint8 (N, 28, 28, 1) with pixels p ∈ 0..255, labels
int32 (N,) with values 0..K-1, K = the dataset's ``num_classes``.

Same work as ``tfds.load(name, split=..., batch_size=-1, data_dir=..., download=...)``
split into builder -> check the image shape -> download/prepare -> read, so that
a dataset of another shape is refused before anything is downloaded.

TensorFlow is imported lazily, with its C++ log spam off (only while importing,
and only where the user has not set ``TF_CPP_MIN_LOG_LEVEL`` /
``TF_ENABLE_ONEDNN_OPTS``), and with its GPUs hidden so TF never takes
accelerator memory that JAX needs. Data order is TFDS's stored order, which is
a fixed permutation of the original IDX order (tfds shuffles when it prepares).

A dataset not yet on disk is fetched by data/download.py (imported only then),
which holds the network check that comes before a download.
"""
import contextlib
import os

import numpy as np

from mnist_jax.errors import UserError

IMAGE_SHAPE = (28, 28, 1)
_QUIET_ENV = {'TF_CPP_MIN_LOG_LEVEL': '2', 'TF_ENABLE_ONEDNN_OPTS': '0'}


@contextlib.contextmanager
def _quiet_env():
  """Sets the unset quiet-TF variables for the duration of the import only."""
  added = [k for k in _QUIET_ENV if k not in os.environ]
  os.environ.update({k: _QUIET_ENV[k] for k in added})
  try:
    yield
  finally:
    for k in added:
      os.environ.pop(k, None)


def _import_tfds():
  """(tf, tfds), imported quietly, with TF's GPUs hidden."""
  with _quiet_env():
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  try:
    tf.config.set_visible_devices([], 'GPU')
  except RuntimeError:  # TF's devices were already initialised by someone else.
    pass
  return tf, tfds


def resolve_data_dir(data_dir):
  """``data_dir``, else $TFDS_DATA_DIR read now (tfds reads it at import), else None."""
  return data_dir or os.environ.get('TFDS_DATA_DIR') or None


def builder(name: str, data_dir=None):
  """The TFDS builder of ``name``, checked to be a 28x28x1 classification set."""
  _, tfds = _import_tfds()
  try:
    b = tfds.builder(name, data_dir=resolve_data_dir(data_dir))
  except tfds.core.registered.DatasetNotFoundError as e:
    raise UserError(f'unknown TFDS dataset {name!r}; set config.data.name to a '
                    f"28x28x1 image-classification dataset such as 'mnist', "
                    f"'fashion_mnist' or 'kmnist'") from e
  check_features(name, b.info.features, b.info.supervised_keys)
  return b


def check_features(name, features, supervised_keys) -> None:
  """Refuses datasets without (image, label) pairs of shape 28x28x1."""
  try:
    shape = tuple(features[supervised_keys[0]].shape)
  except (KeyError, TypeError, IndexError, AttributeError):
    shape = ()
  if shape != IMAGE_SHAPE:
    raise UserError(f'TFDS dataset {name!r} has images of shape {shape or "?"}, '
                    f'not 28x28x1; set config.data.name to a 28x28x1 dataset such '
                    f"as 'mnist', 'fashion_mnist' or 'kmnist'")


def load_splits(name: str, splits=('train', 'test'), data_dir=None,
                download: bool = True):
  """({split: (images uint8 (N,28,28,1), labels int32 (N,))}, num_classes,
  label names (the dataset's, () where it has none))."""
  _, tfds = _import_tfds()
  b = builder(name, data_dir)
  if not b.is_prepared():
    from mnist_jax.data import download as download_lib  # pylint: disable=g-import-not-at-top
    download_lib.prepare(b, name, download)
  out = {}
  for split in splits:
    if split.split('[')[0] not in b.info.splits:  # 'train[:10%]' slices are fine
      raise UserError(f'TFDS dataset {name!r} has no split {split!r} (it has '
                      f'{sorted(b.info.splits)}); use a dataset with train and '
                      f'test splits')
    ds = b.as_dataset(split=split, batch_size=-1, as_supervised=True)
    images, labels = tfds.as_numpy(ds)
    out[split] = (np.asarray(images, np.uint8), np.asarray(labels, np.int32))
  label = b.info.features[b.info.supervised_keys[1]]
  return out, int(label.num_classes), tuple(getattr(label, 'names', None) or ())


def load_split(name: str, split: str, data_dir=None, download: bool = True):
  """(images uint8 (N, 28, 28, 1), labels int32 (N,)) of one split."""
  splits = load_splits(name, (split,), data_dir, download)[0]
  return splits[split]
