"""The original MNIST files (LeCun's IDX format), parsed and validated with numpy.

IDX layout, big-endian: a 4-byte magic ``0x0000 TT DD`` (TT = 0x08 unsigned
bytes, DD = number of dimensions), one uint32 per dimension, then the data.

  images  magic 0x00000803, dims (N, 28, 28) -> N·28·28 pixel bytes 0..255
  labels  magic 0x00000801, dims (N,)        -> N label bytes 0..K−1 (MNIST: K = 10)

so a complete file has exactly 4 + 4·D + ∏dims bytes. Files may be gzip-compressed
or raw (detected by the gzip magic bytes 1f 8b, not by the name). The full MNIST
files (60,000 train / 10,000 test) must also match the known sha256 of their
*decompressed* bytes.
"""
import gzip
import hashlib
import os
import zlib

import numpy as np

from mnist_jax.errors import UserError

IMAGE_MAGIC = 0x00000803
LABEL_MAGIC = 0x00000801
ROWS = COLS = 28
NUM_CLASSES = 10
GZIP_MAGIC = b'\x1f\x8b'

# split -> (image file, label file), without the optional '.gz'.
FILES = {
    'train': ('train-images-idx3-ubyte', 'train-labels-idx1-ubyte'),
    'test': ('t10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte'),
}
STEMS = FILES['train'] + FILES['test']
FULL_COUNTS = {'train': 60000, 'test': 10000}
# sha256 of the decompressed files of the real MNIST.
SHA256 = {
    'train-images-idx3-ubyte':
        'ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db',
    'train-labels-idx1-ubyte':
        '65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5',
    't10k-images-idx3-ubyte':
        '0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7',
    't10k-labels-idx1-ubyte':
        'ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2',
}

_FIX_DIR = ("set config.data.data_dir to the folder holding the four MNIST IDX "
            "files (train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], "
            "t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz]), or set "
            "config.data.download=True to fetch MNIST into it")
_FIX_CORRUPT = 'delete it and download it again'


def existing(directory: str, stem: str):
  """Path of ``stem`` or ``stem.gz`` in ``directory`` (the raw file first), else None."""
  for name in (stem, stem + '.gz'):
    path = os.path.join(directory, name)
    if os.path.isfile(path):
      return path
  return None


def find_file(directory: str, stem: str) -> str:
  """Path of ``stem`` or ``stem.gz`` in ``directory``; UserError when neither is there."""
  path = existing(directory, stem)
  if path is not None:
    return path
  raise UserError(f'MNIST file {os.path.join(directory, stem)}[.gz] not found; '
                  f'{_FIX_DIR}')


def read_bytes(path: str) -> bytes:
  """The file's bytes, gunzipped when it starts with the gzip magic 1f 8b."""
  with open(path, 'rb') as f:
    data = f.read()
  if data[:2] != GZIP_MAGIC:
    return data
  try:
    return gzip.decompress(data)
  except (EOFError, OSError, zlib.error) as e:
    raise UserError(f'{path} is a truncated or corrupt gzip file ({e}); '
                    f'{_FIX_CORRUPT}') from e


def sha256(data: bytes) -> str:
  return hashlib.sha256(data).hexdigest()


def parse(data: bytes, path: str, magic: int) -> np.ndarray:
  """The uint8 array of an IDX file's dims, after checking magic and byte count."""
  ndim = magic & 0xFF
  header = 4 + 4 * ndim
  kind = 'image' if magic == IMAGE_MAGIC else 'label'
  if len(data) < 4:
    raise UserError(f'{path} is truncated ({len(data)} bytes, no IDX header); '
                    f'{_FIX_CORRUPT}')
  found = int.from_bytes(data[:4], 'big')
  if found != magic:
    raise UserError(f'{path} is not an IDX {kind} file (magic 0x{found:08x}, '
                    f'expected 0x{magic:08x}); check that the file is the MNIST '
                    f'{kind} file, or {_FIX_CORRUPT}')
  if len(data) < header:
    raise UserError(f'{path} is truncated ({len(data)} bytes, shorter than its '
                    f'{header}-byte header); {_FIX_CORRUPT}')
  dims = tuple(int(d) for d in np.frombuffer(data, '>u4', ndim, 4))
  expected = header + int(np.prod(dims))
  if len(data) != expected:
    what = 'truncated' if len(data) < expected else 'longer than its header says'
    raise UserError(f'{path} is {what} ({len(data)} bytes, header {dims} needs '
                    f'{expected}); {_FIX_CORRUPT}')
  return np.frombuffer(data, np.uint8, offset=header).reshape(dims)


def _verify_sha256(data: bytes, path: str) -> None:
  name = os.path.basename(path)
  stem = name[:-3] if name.endswith('.gz') else name
  got, want = sha256(data), SHA256[stem]
  if got != want:
    raise UserError(f'{path} has the size of the full MNIST file but its '
                    f'decompressed sha256 is {got}, not {want}; '
                    f'{_FIX_CORRUPT}, or set config.data.name to the dataset '
                    f'it holds if it is not MNIST')


def read_images(path: str, *, verify_if_count: int = -1) -> np.ndarray:
  """uint8 (N, 28, 28, 1) of an IDX file; sha256 checked if N == verify_if_count."""
  data = read_bytes(path)
  images = parse(data, path, IMAGE_MAGIC)
  if images.shape[1:] != (ROWS, COLS):
    raise UserError(f'{path} holds {images.shape[1]}x{images.shape[2]} images, '
                    f'not {ROWS}x{COLS}; point config.data.data_dir at MNIST-format '
                    f'(28x28) IDX files')
  if len(images) == verify_if_count:
    _verify_sha256(data, path)
  return images[..., None]


def read_labels(path: str, *, verify_if_count: int = -1,
                num_classes: int = 256) -> np.ndarray:
  """int32 (N,) labels of an IDX file, each below ``num_classes`` (MNIST's 10 when
  the data is named mnist); sha256 checked if N == verify_if_count."""
  data = read_bytes(path)
  labels = parse(data, path, LABEL_MAGIC)
  if labels.size and labels.max() >= num_classes:
    raise UserError(f'{path} has label {int(labels.max())} outside 0..'
                    f'{num_classes - 1}; {_FIX_CORRUPT}')
  if len(labels) == verify_if_count:
    _verify_sha256(data, path)
  return labels.astype(np.int32)


def load_split(directory: str, split: str, *, name: str = 'mnist'):
  """(images uint8 (N, 28, 28, 1), labels int32 (N,)) of 'train' or 'test'.

  With ``name == 'mnist'`` and the full count (60,000 / 10,000), each file's
  decompressed sha256 must match the real MNIST's; other IDX datasets of the
  same format (e.g. Fashion-MNIST) and subsets are only checked structurally
  (their labels may be any byte: ``num_classes`` counts their classes).
  """
  if split not in FILES:
    raise UserError(f"unknown split {split!r}; use 'train' or 'test'")
  if not directory or not os.path.isdir(directory):
    raise UserError(f'IDX data directory {directory!r} does not exist; {_FIX_DIR}')
  image_path, label_path = (find_file(directory, stem) for stem in FILES[split])
  full = FULL_COUNTS[split] if name == 'mnist' else -1
  images = read_images(image_path, verify_if_count=full)
  labels = read_labels(label_path, verify_if_count=full,
                       num_classes=NUM_CLASSES if name == 'mnist' else 256)
  if len(images) != len(labels):
    raise UserError(f'{image_path} has {len(images)} images but {label_path} has '
                    f'{len(labels)} labels; use an image and a label file of the '
                    f'same split and download')
  return images, labels


def num_classes(name: str, *label_arrays) -> int:
  """K of an IDX dataset: MNIST's 10, else 1 + the largest label of its splits."""
  if name == 'mnist':
    return NUM_CLASSES
  return 1 + max((int(y.max()) for y in label_arrays if len(y)), default=0)


def _write(path: str, magic: int, array: np.ndarray) -> None:
  header = magic.to_bytes(4, 'big') + b''.join(
      int(d).to_bytes(4, 'big') for d in array.shape)
  payload = header + np.ascontiguousarray(array, np.uint8).tobytes()
  if path.endswith('.gz'):
    with open(path, 'wb') as raw, gzip.GzipFile(
        filename='', mode='wb', fileobj=raw, mtime=0) as f:  # reproducible bytes
      f.write(payload)
  else:
    with open(path, 'wb') as f:
      f.write(payload)


def write_split(directory: str, split: str, images, labels, *,
                compress: bool = True):
  """Writes images (N, 28, 28[, 1]) uint8 and labels (N,) as the split's IDX files."""
  images = np.asarray(images)
  labels = np.asarray(labels)
  if images.ndim == 4:
    images = images[..., 0]
  if images.shape[1:] != (ROWS, COLS) or len(images) != len(labels):
    raise ValueError(f'need images (N, 28, 28[, 1]) and labels (N,), got '
                     f'{images.shape} and {labels.shape}')
  os.makedirs(directory, exist_ok=True)
  suffix = '.gz' if compress else ''
  paths = [os.path.join(directory, stem + suffix) for stem in FILES[split]]
  _write(paths[0], IMAGE_MAGIC, images)
  _write(paths[1], LABEL_MAGIC, labels)
  return paths
