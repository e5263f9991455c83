"""The IDX files of MNIST on first use: downloaded from a mirror, checked, cached.

``fetch(directory, name, mirror, sha256)`` makes the four files of ``idx.STEMS`` present
in ``directory`` (``cache_dir(name)`` when config.data.data_dir is unset). Each missing
file f is downloaded as ``<mirror>/f.gz``, decompressed, and kept only when

  sha256(gunzip(download)) = the known sha256 of f

The .gz bytes differ between mirrors (some re-compressed the train images) while the
files inside are the same, so the check is of the decompressed bytes. A refused or
failed download ends in one UserError and leaves ``directory`` as it was: a file that
fails the check is never moved into place, and the files and folders this call made
before it are removed. A second run finds the files and touches no network.

pooch does the transfer: HTTP(S) or FTP with a timeout and retries, streamed into a
temporary file that is hashed against the known sha256 and renamed into place only when
it matches (the known-hash cache that SciPy's and scikit-image's data use). The one
piece of ours is the downloader that gunzips into pooch's temporary file, so that what
pooch hashes is the decompressed file.

The mirror and the hashes are MNIST's unless config.data.mirror and config.data.sha256
say otherwise (another IDX dataset with the same four file names, a local mirror).
"""
import gzip
import os
import zlib

import pooch

from mnist_jax.data import idx
from mnist_jax.errors import UserError

# the original MNIST files as TFDS downloads them
MNIST_MIRROR = 'https://storage.googleapis.com/cvdf-datasets/mnist/'
RETRIES = 2            # pooch tries a file 1 + RETRIES times, waiting 1 s, 2 s between


def cache_dir(name: str) -> str:
  """Where the IDX files of ``name`` are kept when config.data.data_dir is unset:
  ``<user cache>/mnist_jax/<name>`` (~/.cache/mnist_jax/mnist on Linux)."""
  return os.path.join(str(pooch.os_cache('mnist_jax')), name)


def source(name: str, mirror=None, sha256=None) -> tuple:
  """(mirror URL, {file: sha256 of its decompressed bytes}) to fetch ``name`` from:
  the given ones, else MNIST's for 'mnist'; UserError where neither is known."""
  if mirror is None and name != 'mnist':
    raise UserError(f"no mirror of {name!r} is known; put its four IDX files in "
                    'config.data.data_dir, or set config.data.mirror and config.data.sha256')
  if sha256 is None and name != 'mnist':
    raise UserError(f'config.data.sha256 is unset, so the files of {name!r} from {mirror} '
                    'cannot be checked; set it to the sha256 of the four decompressed '
                    'files (train images, train labels, test images, test labels)')
  hashes = tuple(idx.SHA256[s] for s in idx.STEMS) if sha256 is None else tuple(sha256)
  if len(hashes) != len(idx.STEMS):
    raise UserError(f'config.data.sha256 holds {len(hashes)} values; give the sha256 of '
                    'the four decompressed files (train images, train labels, test '
                    'images, test labels)')
  return mirror or MNIST_MIRROR, dict(zip(idx.STEMS, hashes))


class _NotGzip(ValueError):
  """A download that is not a complete gzip file (pooch retries a ValueError)."""


def _gunzip(url, output_file, instance):
  """A pooch downloader: the .gz at ``url``, decompressed into ``output_file`` (pooch's
  temporary file), so that pooch hashes the decompressed bytes."""
  packed = f'{output_file}.gz'
  try:
    pooch.downloaders.choose_downloader(url)(url, packed, instance)
    with open(packed, 'rb') as f:
      data = f.read()
  finally:
    if os.path.exists(packed):
      os.remove(packed)
  try:
    data = gzip.decompress(data)
  except (OSError, EOFError, zlib.error) as e:
    raise _NotGzip(f'it is not a complete gzip file ({e})') from None
  os.remove(output_file)   # made anew, so that it gets the umask's mode, not 0600
  with open(output_file, 'wb') as f:
    f.write(data)


def fetch(directory: str, name: str, mirror=None, sha256=None) -> None:
  """Downloads into ``directory`` the IDX files of ``name`` it lacks (see above)."""
  missing = [s for s in idx.STEMS if idx.existing(directory, s) is None]
  if not missing:
    return
  mirror, hashes = source(name, mirror, sha256)
  base = mirror.rstrip('/') + '/'
  urls = {s: f'{base}{s}.gz' for s in missing}
  store = pooch.create(path=directory, base_url=base, urls=urls, retry_if_failed=RETRIES,
                       registry={s: f'sha256:{hashes[s]}' for s in missing})
  new_folders = _new_folders(directory)
  fetched = []
  try:
    for stem in missing:
      fetched.append(_fetch_one(store, stem, urls[stem], hashes[stem], directory))
  except UserError:
    for path in fetched:
      os.remove(path)
    for folder in new_folders:   # deepest first; those this call made, if left empty
      if os.path.isdir(folder) and not os.listdir(folder):
        os.rmdir(folder)
    raise


def _new_folders(directory) -> list:
  """The folders of ``directory`` that do not exist yet, deepest first."""
  new, path = [], os.path.abspath(directory)
  while not os.path.exists(path):
    new.append(path)
    path = os.path.dirname(path)
  return new


def _fetch_one(store, stem, url, sha256, directory) -> str:
  """The path of ``stem`` fetched by ``store``; each failure as one UserError."""
  import requests  # pylint: disable=g-import-not-at-top  (pooch's transport, slow to import)
  try:
    return store.fetch(stem, downloader=_gunzip)
  except _NotGzip as e:
    raise _refused(url, str(e), directory) from None
  except ValueError:  # pooch: the decompressed sha256 is not the known one
    raise _refused(url, f'the sha256 of its decompressed bytes is not {sha256}',
                   directory) from None
  except requests.exceptions.RequestException as e:
    raise UserError(f'cannot download {url} ({_why(e)}); check the network and '
                    'config.data.mirror, or put the four IDX files in '
                    f'{directory} (config.data.data_dir)') from None
  except OSError as e:
    raise UserError(f'cannot write the download of {url} into {directory} ({e}); set '
                    'config.data.data_dir to a writable folder') from None


def _why(e) -> str:
  """A failed request in a few words: the HTTP status, else the innermost error's name
  (urllib3's MaxRetryError holds it as ``reason``: NameResolutionError, ...)."""
  response = getattr(e, 'response', None)
  if response is not None:
    return f'HTTP {response.status_code} {response.reason}'
  reason = getattr(e.args[0], 'reason', None) if e.args else None
  return type(reason or e).__name__


def _refused(url, reason, directory) -> UserError:
  return UserError(f'refused the download of {url}: {reason}; nothing was kept in '
                   f'{directory}; point config.data.mirror at a copy of the original files')
