"""Compile once per machine: JAX's persistent compilation cache.

XLA compiles each distinct program (train chunk, eval step) once per process; a
new process, or a new trial of a sweep, compiles them again. With the persistent
cache on, a compiled executable is written to disk under a key that hashes the
program (debug info stripped), the devices, the XLA flags and the JAX version,
so the next process with an equal program loads it instead of compiling. A
changed model, shape, flag or JAX release is a new key: the cache can be stale
only in size, never in result, and it is capped at MAX_BYTES (least recently
used entries are deleted first). Processes sharing the directory (sweep
workers, test workers) take a file lock per access, so none reads an entry
another is still writing.

  where(requested)  the directory to use: ``requested``, else $MNIST_JAX_COMPILATION_CACHE,
                    else $XDG_CACHE_HOME/mnist_jax/jax (~/.cache/mnist_jax/jax);
                    'off' (or '', 'none', '0', 'false') means no cache
  enable(path)      turns the cache on at ``path`` for this process; call it before
                    the first compilation (JAX reads the setting once)

Programs that took >= MIN_COMPILE_S to compile are kept: the few programs a
run spends its compile time on, not the many tiny ones that cost more to write
and read back than to compile (what the cache saves: experiments/results/
sweep_walltime.md).
"""
import os

import jax

from mnist_jax.errors import UserError

ENV = 'MNIST_JAX_COMPILATION_CACHE'
MIN_COMPILE_S = 0.1
MAX_BYTES = 2 * 2**30   # least recently used entries go beyond this
OFF = ('off', 'none', '0', 'false', 'no', '')


def where(requested=None):
  """The cache directory to use (absolute), or None when the cache is switched off."""
  value = requested if requested is not None else os.environ.get(ENV)
  if value is None:
    base = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
    value = os.path.join(base, 'mnist_jax', 'jax')
  if value.strip().lower() in OFF:
    return None
  return os.path.abspath(os.path.expanduser(value))


def enable(path, min_compile_s: float = MIN_COMPILE_S) -> None:
  """Turns JAX's persistent compilation cache on at ``path`` (None: leaves it off),
  keeping programs that took >= ``min_compile_s`` to compile."""
  if path is None:
    return
  try:
    os.makedirs(path, exist_ok=True)
  except OSError as e:
    raise UserError(f'cannot make the compilation cache directory {path} ({e.strerror}); '
                    f'pass --compilation_cache=DIR with a writable DIR, or '
                    f'--compilation_cache=off') from None
  jax.config.update('jax_compilation_cache_dir', path)
  jax.config.update('jax_persistent_cache_min_compile_time_secs', min_compile_s)
  jax.config.update('jax_persistent_cache_min_entry_size_bytes', -1)
  jax.config.update('jax_compilation_cache_max_size', MAX_BYTES)
