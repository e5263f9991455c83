"""MNIST on first use, end to end: the real command downloads it, checks it, caches it, trains.

A loopback HTTP server (http.server on 127.0.0.1, a free port) serves a folder of .gz
IDX files as the mirror; ``python -m mnist_jax.main`` runs in a subprocess with an
empty cache folder (config.data.data_dir) and config.data.mirror pointing at the
server. Nothing in the library is replaced: what is tested is the command a user runs.
"""
import contextlib
import functools
import gzip
import hashlib
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading

import pytest

from mnist_jax.data import download, idx
from mnist_jax.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class _Handler(http.server.SimpleHTTPRequestHandler):
  """Serves the folder and records each requested path on the server."""

  def log_message(self, *args):
    self.server.requested.append(self.path)


@contextlib.contextmanager
def mirror(folder):
  """The URL of a loopback HTTP server of ``folder``, and the paths it was asked for."""
  server = http.server.ThreadingHTTPServer(
      ('127.0.0.1', 0), functools.partial(_Handler, directory=str(folder)))
  server.requested = []
  thread = threading.Thread(target=server.serve_forever, daemon=True)
  thread.start()
  try:
    yield f'http://127.0.0.1:{server.server_address[1]}/', server.requested
  finally:
    server.shutdown()
    server.server_close()


def decompressed_sha256(folder) -> tuple:
  """sha256 of the decompressed files of ``folder``, in the order of config.data.sha256."""
  return tuple(hashlib.sha256(gzip.decompress(open(os.path.join(folder, s + '.gz'), 'rb')
                                              .read())).hexdigest() for s in idx.STEMS)


def train(workdir, cache, url, sha256=None):
  """The first-run command on ``cache`` and the mirror ``url``, one short epoch."""
  args = ['--config=configs/mlp.py', f'--workdir={workdir}',
          f'--config.data.data_dir={cache}', f'--config.data.mirror={url}',
          '--config.num_epochs=1', '--config.data.val_size=500',
          '--config.data.train_limit=1000', '--config.batch_size=100',
          '--config.eval_batch_size=500', '--config.write_plots=False']
  if sha256 is not None:
    args.append(f'--config.data.sha256={sha256!r}')
  return subprocess.run([sys.executable, '-m', 'mnist_jax.main', *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=600)


def cached(cache) -> dict:
  """{file: sha256} of what the cache folder holds."""
  if not os.path.isdir(cache):
    return {}
  return {f: hashlib.sha256(open(os.path.join(cache, f), 'rb').read()).hexdigest()
          for f in sorted(os.listdir(cache))}


def assert_trained(out, workdir):
  assert out.returncode == 0, out.stderr[-3000:]
  summary = json.loads((workdir / 'summary.json').read_text())
  assert summary['epochs'] == 1 and 0 <= summary['test_accuracy'] <= 1
  assert 'test accuracy' in out.stdout


def test_first_run_downloads_checks_caches_and_trains(tmp_path, mnist_small_dir):
  sha256 = decompressed_sha256(mnist_small_dir)
  cache = tmp_path / 'cache'
  with mirror(mnist_small_dir) as (url, requested):
    out = train(tmp_path / 'first', cache, url, sha256)
  assert_trained(out, tmp_path / 'first')
  assert sorted(requested) == sorted(f'/{s}.gz' for s in idx.STEMS)
  assert cached(cache) == dict(zip(idx.STEMS, sha256))   # decompressed, checked
  # A second run reads the cache: the mirror's port is closed now.
  out = train(tmp_path / 'second', cache, url, sha256)
  assert_trained(out, tmp_path / 'second')
  assert 'Downloading' not in out.stderr


@pytest.mark.parametrize('damage', ['a flipped label', 'not gzip'])
def test_a_corrupted_download_is_refused_and_nothing_is_cached(tmp_path, mnist_small_dir,
                                                               damage):
  """The last file fetched is damaged: the three good ones fetched before it go too."""
  sha256 = decompressed_sha256(mnist_small_dir)
  served = tmp_path / 'mirror'
  shutil.copytree(mnist_small_dir, served)
  last = served / (idx.STEMS[-1] + '.gz')
  labels = bytearray(gzip.decompress(last.read_bytes()))
  labels[-1] = (labels[-1] + 1) % 10
  last.write_bytes(gzip.compress(bytes(labels)) if damage == 'a flipped label'
                   else bytes(labels))
  cache = tmp_path / 'cache'
  with mirror(served) as (url, requested):
    out = train(tmp_path / 'run', cache, url, sha256)
  assert out.returncode == 2, out.stderr[-3000:]
  errors = [line for line in out.stderr.splitlines() if line.startswith('error:')]
  assert len(errors) == 1 and out.stderr.rstrip().endswith(errors[0]), out.stderr[-3000:]
  assert f'refused the download of {url}{idx.STEMS[-1]}.gz' in errors[0]
  assert ('sha256' if damage == 'a flipped label' else 'not a complete gzip') in errors[0]
  assert 'Traceback' not in out.stderr
  assert f'/{idx.STEMS[0]}.gz' in requested
  assert not cache.exists() and not (tmp_path / 'run').exists()   # nothing written


@pytest.mark.full_data
def test_first_run_of_the_full_mnist_checks_the_known_hashes(tmp_path, full_data_dir):
  """The default hashes (no config.data.sha256): MNIST's decompressed files, whatever
  compression the mirror used (this mirror's train images are re-compressed)."""
  cache = tmp_path / 'cache'
  with mirror(os.path.join(full_data_dir, 'mnist')) as (url, _):
    out = train(tmp_path / 'run', cache, url)
  assert_trained(out, tmp_path / 'run')
  assert cached(cache) == idx.SHA256


def test_a_mirror_of_another_dataset_needs_its_hashes(tmp_path):
  with pytest.raises(UserError, match="no mirror of 'kmnist' is known"):
    download.fetch(str(tmp_path), 'kmnist')
  with pytest.raises(UserError, match='config.data.sha256 is unset'):
    download.fetch(str(tmp_path), 'kmnist', mirror='http://127.0.0.1:9/')
  with pytest.raises(UserError, match='holds 2 values'):
    download.fetch(str(tmp_path), 'mnist', sha256=('a', 'b'))
  assert not os.listdir(tmp_path)
