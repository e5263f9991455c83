"""Fetching a TFDS dataset that is not on disk yet: a network check, then TFDS's download.

Before a download, the hosts TFDS would fetch from (the dataset's checksummed
URLs, its GCS mirror, any HTTP(S) proxy) are looked up in DNS, ≤ 3 s: when none
resolves, a UserError comes at once instead of minutes of TFDS's retries.
data/tfds.py imports this module only for a dataset that is not prepared, so
reading a prepared dataset never touches the network code.
"""
import queue
import socket
import threading
import time
import urllib.parse
import urllib.request

from mnist_jax.errors import UserError

_FIX_MISSING = ('set TFDS_DATA_DIR or config.data.data_dir to a folder holding the '
                'prepared dataset, or set config.data.download=True')
_FIX_OFFLINE = ('download it on a machine with internet and set TFDS_DATA_DIR or '
                'config.data.data_dir to its folder, or use '
                "config.data.source='idx' with config.data.data_dir holding the "
                'MNIST IDX files')
_GCS_HOST = 'storage.googleapis.com'  # gs://tfds-data, tried first (try_download_gcs)
RESOLVE_TIMEOUT_S = 3.0


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
