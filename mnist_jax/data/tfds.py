"""The tensorflow-datasets source: any 28x28x1 TFDS image-classification set (the tfds extra).

``mnist``, ``fashion_mnist``, ``kmnist``, ... are read whole into numpy: images uint8
(N, 28, 28, 1) with pixels p ∈ 0..255, labels int32 (N,) with values 0..K-1, K = the
dataset's ``num_classes``.

It does what ``tfds.load(name, split=..., batch_size=-1, data_dir=..., download=...)``
does, in steps, so that a dataset of another shape is refused before anything is
downloaded: builder -> check the image shape -> ``download_and_prepare`` when
``download`` is set and the data is not prepared -> read. Everything a TFDS user relies
on holds: ``data_dir`` (else $TFDS_DATA_DIR, else ~/tensorflow_datasets), a prepared copy
read offline with ``download=False``, and ``tfds.testing.mock_data``, which replaces
the builder's preparation and reading (nothing here looks at the network or the disk
before TFDS does).

How a prepared copy is read depends on its file format:
  array_record  ``builder.as_data_source``: random access with no TensorFlow
  tfrecord      ``builder.as_dataset``: TensorFlow, as is preparing a download
TensorFlow is imported only then, with its C++ log spam off (while importing, where the
user has not set ``TF_CPP_MIN_LOG_LEVEL`` / ``TF_ENABLE_ONEDNN_OPTS``) and its GPUs
hidden, so that it never takes accelerator memory that JAX needs. A missing TFDS or
TensorFlow is one UserError naming the extra (mnist_jax/extras.py).

Data order is TFDS's stored order, a fixed permutation of the original IDX order (TFDS
shuffles when it prepares).
"""
import contextlib
import os

import numpy as np

from mnist_jax import extras
from mnist_jax.errors import UserError

IMAGE_SHAPE = (28, 28, 1)
_BATCH = 10000   # examples per batch read from a tfrecord copy
_QUIET_ENV = {'TF_CPP_MIN_LOG_LEVEL': '2', 'TF_ENABLE_ONEDNN_OPTS': '0'}
_FIX_MISSING = ('set TFDS_DATA_DIR or config.data.data_dir to a folder holding the '
                'prepared dataset, or set config.data.download=True')


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


def _tfds():
  return extras.require('tensorflow_datasets', 'the TFDS source')


def _tensorflow(what: str):
  """TensorFlow, imported quietly, with its GPUs hidden; UserError naming the extra."""
  with _quiet_env():
    tf = extras.require('tensorflow', what)
  try:
    tf.config.set_visible_devices([], 'GPU')
  except RuntimeError:  # TF's devices were already initialised by someone else.
    pass
  return tf


def resolve_data_dir(data_dir):
  """``data_dir``, else $TFDS_DATA_DIR read now (tfds reads it at import), else None."""
  return data_dir or os.environ.get('TFDS_DATA_DIR') or None


def builder(name: str, data_dir=None):
  """The TFDS builder of ``name``, checked to be a 28x28x1 classification set."""
  tfds = _tfds()
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


def prepare(b, name: str) -> None:
  """TFDS's ``download_and_prepare`` of ``b``, its failures as one UserError."""
  _tensorflow(f'preparing TFDS dataset {name!r}')
  where = str(b.data_dir_root)
  try:
    b.download_and_prepare()
  except ImportError as e:
    raise UserError(f'TFDS cannot prepare {name!r}: Python module {e.name!r} is '
                    f'missing; pip install {e.name}') from e
  except OSError as e:  # includes requests' ConnectionError, DNS, disk errors.
    raise UserError(f'downloading TFDS dataset {name!r} into {where} failed '
                    f'({type(e).__name__}: {str(e)[:200]}); check the network and '
                    f'the disk, or download it elsewhere and set TFDS_DATA_DIR or '
                    f'config.data.data_dir to its folder with config.data.download=False'
                    ) from e


def read(b, name: str, split: str):
  """(images uint8 (N, 28, 28, 1), labels int32 (N,)) of ``split`` of a builder."""
  known = b.info.splits   # empty where TFDS does not know them (mock_data): any is read
  if known and split.split('[')[0] not in known:  # 'train[:10%]' slices are fine
    raise UserError(f'TFDS dataset {name!r} has no split {split!r} (it has '
                    f'{sorted(known)}); use a dataset with train and test splits')
  tfds = _tfds()
  random_access = tfds.core.file_adapters.FileFormat.with_random_access()
  if b.info.available_file_formats() & set(random_access):
    return _read_records(b, split)
  _tensorflow(f'reading the tfrecord copy of TFDS dataset {name!r}')
  try:
    ds = b.as_dataset(split=split, as_supervised=True)
  except AssertionError as e:  # TFDS: "could not find data in ..."
    raise UserError(f'TFDS dataset {name!r} is not in {b.data_dir_root} and '
                    f'config.data.download is False; {_FIX_MISSING}') from e
  # in batches of a known size: batch_size=-1 batches by the split's recorded size,
  # which mock_data's datasets do not have
  batches = list(tfds.as_numpy(ds.batch(_BATCH)))
  return _arrays([x for x, _ in batches], [y for _, y in batches])


def _arrays(images, labels):
  """Lists of image and label arrays (or single examples) as uint8 (N, 28, 28, 1), int32 (N,)."""
  images = [np.asarray(x, np.uint8).reshape(-1, *IMAGE_SHAPE) for x in images]
  return (np.concatenate(images) if images else np.zeros((0, *IMAGE_SHAPE), np.uint8),
          np.asarray(np.concatenate([np.reshape(y, -1) for y in labels]) if labels
                     else (), np.int32))


def _read_records(b, split: str):
  """A random-access copy (array_record) read example by example, without TensorFlow."""
  image_key, label_key = b.info.supervised_keys
  source = b.as_data_source(split=split)
  examples = source.__getitems__(range(len(source)))  # one batched read of the split
  return _arrays([e[image_key] for e in examples], [e[label_key] for e in examples])


def load_splits(name: str, splits=('train', 'test'), data_dir=None,
                download: bool = True):
  """({split: (images uint8 (N,28,28,1), labels int32 (N,))}, num_classes,
  label names (the dataset's, () where it has none))."""
  b = builder(name, data_dir)
  if download and not b.is_prepared():
    prepare(b, name)
  out = {split: read(b, name, split) for split in splits}
  label = b.info.features[b.info.supervised_keys[1]]
  return out, int(label.num_classes), tuple(getattr(label, 'names', None) or ())


def load_split(name: str, split: str, data_dir=None, download: bool = True):
  """(images uint8 (N, 28, 28, 1), labels int32 (N,)) of one split."""
  splits = load_splits(name, (split,), data_dir, download)[0]
  return splits[split]
