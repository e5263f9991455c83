"""store/compile_cache.py: the persistent compilation cache, its directory and its switch."""
import os
import subprocess
import sys

import pytest

from mnist_jax.store import compile_cache
from mnist_jax.errors import UserError

# A fresh process: turn the cache on (or not), compile one program, print the hits.
_PROGRAM = '''
import sys
import jax, jax.numpy as jnp
from jax import monitoring
from mnist_jax.store import compile_cache
hits = []
monitoring.register_event_listener(
    lambda name, **_: hits.append(name) if name.endswith('cache_hits') else None)
compile_cache.enable(compile_cache.where(sys.argv[1] if len(sys.argv) > 1 else None), 0.0)
f = jax.jit(lambda x: jnp.tanh(x @ x.T).sum())
print(float(f(jnp.ones((64, 64)))), len(hits))
'''


def _run(env, *args):
  out = subprocess.run([sys.executable, '-c', _PROGRAM, *args], env=env, check=True,
                       capture_output=True, text=True).stdout.split()
  return float(out[0]), int(out[1])


def test_where_reads_flag_then_environment_then_user_cache(monkeypatch, tmp_path):
  monkeypatch.setenv(compile_cache.ENV, str(tmp_path / 'env'))
  assert compile_cache.where(str(tmp_path / 'flag')) == str(tmp_path / 'flag')
  assert compile_cache.where() == str(tmp_path / 'env')
  for off in ('off', 'OFF', 'none', ''):
    assert compile_cache.where(off) is None
  monkeypatch.delenv(compile_cache.ENV)
  monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'xdg'))
  assert compile_cache.where() == str(tmp_path / 'xdg' / 'mnist_jax' / 'jax')


def test_second_process_loads_the_compiled_program_with_the_same_result(tmp_path):
  env = {**os.environ, compile_cache.ENV: str(tmp_path / 'cache')}
  first, first_hits = _run(env)
  assert first_hits == 0 and os.listdir(tmp_path / 'cache')   # compiled, then written
  second, second_hits = _run(env)
  assert second_hits >= 1 and second == first                 # loaded, same number
  off, off_hits = _run(env, 'off')
  assert off_hits == 0 and off == first


def test_unwritable_directory_is_one_clear_error(tmp_path):
  blocker = tmp_path / 'file'
  blocker.write_text('not a directory')
  with pytest.raises(UserError, match='compilation_cache=off'):
    compile_cache.enable(str(blocker / 'cache'))
