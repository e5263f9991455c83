"""Train / validation / test splits of MNIST-like data, held on the host as uint8.

Reads ``config.data`` and returns a ``Dataset``. Two sources:

  idx   the four IDX files in data_dir (default: data/download.cache_dir(name)); MNIST's
        are downloaded there from data.mirror on first use when data.download is True
        (data/download.py), with no TensorFlow anywhere
  tfds  a TFDS dataset by name, as tfds.load reads it (data/tfds.py; the tfds extra)

The official train split of N images is cut as

  validation = train[N - val_size:]          (the LAST val_size images)
  train      = train[:N - val_size]          (then the first train_limit, if > 0)
  test       = the official test split, untouched

The cut is deterministic and independent of the seed: the same images are
held out in every run. "Last" means in the source's stored order: the IDX
file's order, or TFDS's order, which is a fixed permutation of it (TFDS
shuffles when it prepares the data), so the two sources hold out different,
equally valid, images. Pixels stay uint8 0..255 here; x = p / 255
happens on the device (``mnist_jax.data.preprocess.normalize``).
"""
import dataclasses

import numpy as np

from mnist_jax.data import download, idx
from mnist_jax.errors import UserError

SOURCES = ('idx', 'tfds')


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
  """uint8 images (N, 28, 28, 1) and int32 labels (N,) of each split; the classes
  0..num_classes−1 and their names (the source's, else '0', '1', ...)."""
  name: str
  num_classes: int
  train_images: np.ndarray
  train_labels: np.ndarray
  val_images: np.ndarray
  val_labels: np.ndarray
  test_images: np.ndarray
  test_labels: np.ndarray
  label_names: tuple = ()

  def sizes(self) -> dict:
    return {'train': len(self.train_labels), 'val': len(self.val_labels),
            'test': len(self.test_labels)}


def split_train_val(images, labels, val_size: int, train_limit: int = 0):
  """((train_images, train_labels), (val_images, val_labels)) by the rule above."""
  n = len(labels)
  if not isinstance(val_size, (int, np.integer)) or not 0 <= val_size < n:
    raise UserError(f'config.data.val_size={val_size!r} must be an integer in '
                    f'0..{n - 1} (the train split has {n} images); set '
                    f'config.data.val_size accordingly')
  cut = n - val_size
  if not isinstance(train_limit, (int, np.integer)) or not 0 <= train_limit <= cut:
    raise UserError(f'config.data.train_limit={train_limit!r} must be an integer '
                    f'in 0..{cut} (0 = all {cut} train images left after '
                    f'val_size={val_size}); set config.data.train_limit accordingly')
  end = train_limit or cut
  return (images[:end], labels[:end]), (images[cut:], labels[cut:])


def _read(data_config):
  """({'train': (x, y), 'test': (x, y)}, num_classes, label names) from the
  configured source."""
  source, name = data_config.source, data_config.name
  if source == 'idx':
    directory = data_config.data_dir or download.cache_dir(name)
    if data_config.download:
      download.fetch(directory, name, data_config.mirror, data_config.sha256)
    splits = {s: idx.load_split(directory, s, name=name) for s in ('train', 'test')}
    return splits, idx.num_classes(name, *(y for _, y in splits.values())), ()
  if source == 'tfds':
    from mnist_jax.data import tfds  # pylint: disable=g-import-not-at-top  (an extra)
    return tfds.load_splits(name, ('train', 'test'), data_config.data_dir,
                            bool(data_config.download))
  raise UserError(f'unknown config.data.source {source!r}; use one of {SOURCES}')


def load(data_config) -> Dataset:
  """The ``Dataset`` described by ``config.data``."""
  splits, num_classes, names = _read(data_config)
  (train_x, train_y), (val_x, val_y) = split_train_val(
      *splits['train'], data_config.val_size, data_config.train_limit)
  names = tuple(names) if len(names) == num_classes else tuple(
      str(k) for k in range(num_classes))
  return Dataset(name=data_config.name, num_classes=int(num_classes), label_names=names,
                 train_images=train_x, train_labels=train_y,
                 val_images=val_x, val_labels=val_y,
                 test_images=splits['test'][0], test_labels=splits['test'][1])
