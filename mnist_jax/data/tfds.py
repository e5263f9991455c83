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

Before a download, the hosts TFDS would fetch from (the dataset's checksummed
URLs, its GCS mirror, any HTTP(S) proxy) are looked up in DNS, ≤ 3 s: when none
resolves, a UserError comes at once instead of minutes of TFDS's retries.
"""
import contextlib
import os
import queue
import socket
import threading
import time
import urllib.parse
import urllib.request

import numpy as np

from mnist_jax.errors import UserError

IMAGE_SHAPE = (28, 28, 1)
_QUIET_ENV = {'TF_CPP_MIN_LOG_LEVEL': '2', 'TF_ENABLE_ONEDNN_OPTS': '0'}
_FIX_MISSING = ('set TFDS_DATA_DIR or config.data.data_dir to a folder holding the '
                'prepared dataset, or set config.data.download=True')
_FIX_OFFLINE = ('download it on a machine with internet and set TFDS_DATA_DIR or '
                'config.data.data_dir to its folder, or use '
                "config.data.source='idx' with config.data.data_dir holding the "
                'MNIST IDX files')
_GCS_HOST = 'storage.googleapis.com'  # gs://tfds-data, tried first (try_download_gcs)
RESOLVE_TIMEOUT_S = 3.0


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


def _hostname(url: str):
  """The host of ``url`` ('proxy:3128' counts as http://proxy:3128), else None."""
  return urllib.parse.urlsplit(url if '://' in url else f'http://{url}').hostname


def download_hosts(b):
  """Sorted hosts TFDS may fetch ``b`` from, or None where its URLs are unknown."""
  url_infos = getattr(b, 'url_infos', None)  # from the dataset's checksums.tsv
  if not url_infos:
    return None
  proxies = [v for k, v in urllib.request.getproxies().items() if k != 'no']
  hosts = {_hostname(u) for u in [*url_infos, *proxies]} | {_GCS_HOST}
  return sorted(h for h in hosts if h)


def any_resolves(hosts, timeout: float = RESOLVE_TIMEOUT_S) -> bool:
  """Whether a DNS lookup of any of ``hosts`` succeeds within ``timeout`` s (no connection)."""
  results = queue.Queue()

  def lookup(host):
    try:
      socket.getaddrinfo(host, 443, type=socket.SOCK_STREAM)
      results.put(True)
    except (OSError, UnicodeError):  # gaierror is an OSError
      results.put(False)

  for host in hosts:  # daemon threads: a stuck lookup never blocks the exit
    threading.Thread(target=lookup, args=(host,), daemon=True).start()
  deadline = time.monotonic() + timeout
  for _ in hosts:
    try:
      if results.get(timeout=max(0.0, deadline - time.monotonic())):
        return True
    except queue.Empty:
      return False
  return False


def check_network(b, name: str) -> None:
  """UserError at once when no host TFDS would download ``name`` from resolves."""
  hosts = download_hosts(b)
  if hosts and not any_resolves(hosts):
    raise UserError(f'cannot resolve {", ".join(hosts)} to download TFDS dataset '
                    f'{name!r} (no network?); {_FIX_OFFLINE}')


def prepare(b, name: str, download: bool) -> None:
  """Makes sure the data is on disk: downloads it if allowed, else a UserError."""
  if b.is_prepared():
    return
  where = str(b.data_dir_root)
  if not download:
    raise UserError(f'TFDS dataset {name!r} is not in {where} and '
                    f'config.data.download is False; {_FIX_MISSING}')
  check_network(b, name)
  try:
    b.download_and_prepare()
  except ImportError as e:
    raise UserError(f'TFDS cannot download {name!r}: Python module {e.name!r} is '
                    f'missing; pip install {e.name}') from e
  except OSError as e:  # includes requests' ConnectionError, DNS, disk errors.
    raise UserError(f'downloading TFDS dataset {name!r} into {where} failed '
                    f'({type(e).__name__}: {str(e)[:200]}); check the network and '
                    f'the disk, or download it elsewhere and set TFDS_DATA_DIR or '
                    f'config.data.data_dir to its folder') from e


def load_splits(name: str, splits=('train', 'test'), data_dir=None,
                download: bool = True):
  """({split: (images uint8 (N,28,28,1), labels int32 (N,))}, num_classes)."""
  _, tfds = _import_tfds()
  b = builder(name, data_dir)
  prepare(b, name, download)
  out = {}
  for split in splits:
    if split.split('[')[0] not in b.info.splits:  # 'train[:10%]' slices are fine
      raise UserError(f'TFDS dataset {name!r} has no split {split!r} (it has '
                      f'{sorted(b.info.splits)}); use a dataset with train and '
                      f'test splits')
    ds = b.as_dataset(split=split, batch_size=-1, as_supervised=True)
    images, labels = tfds.as_numpy(ds)
    out[split] = (np.asarray(images, np.uint8), np.asarray(labels, np.int32))
  label_key = b.info.supervised_keys[1]
  return out, int(b.info.features[label_key].num_classes)


def load_split(name: str, split: str, data_dir=None, download: bool = True):
  """(images uint8 (N, 28, 28, 1), labels int32 (N,)) of one split."""
  splits, _ = load_splits(name, (split,), data_dir, download)
  return splits[split]
