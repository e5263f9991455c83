"""One training epoch: the data on the devices, the epoch's batches, the compiled steps.

Every epoch e draws its own order of the N training images and takes ⌊N/B⌋ steps

  (perm_key_e, step_key_e) = split(fold_in(train_key, e))
  π = permutation(perm_key_e)[:⌊N/B⌋·B]   (the remainder waits for another epoch's
                                          permutation)
  for t = 1 .. ⌊N/B⌋:  state, m_t = step(state, batch_t(π), step_key_e)

and returns the mean of the step metrics m_t. The step folds its counter into
step_key_e, so randomness is a pure function of (seed, epoch, step): a resumed
run replays what an uninterrupted one does.

Speed comes from keeping the host out of the way: the dataset lives on the
device as uint8 (60,000 x 784 B = 47 MB; with per-device shards each device
holds only its 1/D, parallel/shards.py); the permutation is drawn on the
device, and the steps run in chunks of about ``config.log_every_steps``: one
dispatch of jit(lax.scan(step)) per chunk (loop_mode='scan'), or one jit(step)
per step with the metrics summed on the device (loop_mode='step': no while
loop, in which XLA:CPU's own convolutions run many times slower, jax#12868).
Batches are gathered, preprocessed and sharded over the devices inside the
compiled code. The step is the trainer's ``train.train_step`` or the K-model
step of engine/stacked.py; this module does not know which.
"""
import dataclasses
import functools
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax.sharding import NamedSharding, PartitionSpec as P

from mnist_jax import parallel, train as train_lib
from mnist_jax.parallel import shards


@dataclasses.dataclass
class Feed:
  """The training set on the devices and how an epoch's batches are drawn."""
  images: Any
  labels: Any
  num_train: int
  steps: int             # ⌊N/B⌋
  permute: Any           # key -> (steps, B) row indices (traced in epoch_order)
  gather: Any            # (images, labels, rows) -> one batch


def run_keys(seed: int) -> tuple:
  """(init_key, train_key) = split(key(seed)): the model's initial weights, and
  everything its epochs draw. One program compiled like the other once-a-run
  programs (train.once_compiler_options); eager, key, split and the unpacking
  would compile three."""
  program = jax.jit(_run_keys, compiler_options=train_lib.once_compiler_options())
  return program(np.uint32(seed % 2**32))   # key(seed) keeps the seed's low 32 bits


def _run_keys(seed):
  return tuple(jax.random.split(jax.random.key(seed)))


def epoch_order(feed_: 'Feed', train_key, epoch: int) -> tuple:
  """(row indices, step_key) of epoch e: (perm_key, step_key) = split(fold_in(train_key,
  e)), the indices ``feed_.permute(perm_key)``. One program for every epoch,
  compiled like the batch order alone (train.once_compiler_options)."""
  program = jax.jit(_epoch_order, static_argnums=0,
                    compiler_options=train_lib.once_compiler_options())
  return program(feed_.permute, train_key, np.uint32(epoch))


def _epoch_order(permute, train_key, epoch):
  perm_key, step_key = jax.random.split(jax.random.fold_in(train_key, epoch))
  return permute(perm_key), step_key


def batch_order(key, num_train: int, steps: int, batch_size: int):
  """An epoch's (steps, B) row indices: the first steps·B of a permutation of 0..N−1."""
  return jax.random.permutation(key, num_train)[:steps * batch_size].reshape(
      steps, batch_size)


def _gather(images, labels, idx):
  return images[idx], labels[idx]


def feed(config, data, mesh) -> tuple:
  """(Feed, data): the training rows on the devices (this process's only, with
  per-device shards or several processes) and the matching permutation/gather."""
  if bool(config.data.per_device_shards) or jax.process_count() > 1:
    x, y, rows = shards.local_rows(data.train_images, data.train_labels, mesh)
    data = dataclasses.replace(data, train_images=x, train_labels=y)
    num_train = rows * mesh.devices.size
    images, labels = shards.place(x, y, rows, mesh)
    return Feed(images, labels, num_train, max(1, num_train // config.batch_size),
                shards.permutation_fn(num_train, config.batch_size, mesh),
                shards.gather_fn(mesh)), data
  num_train = len(data.train_labels)
  images, labels = parallel.replicate((data.train_images, data.train_labels), mesh)
  steps = max(1, num_train // config.batch_size)
  permute = functools.partial(batch_order, num_train=num_train, steps=steps,
                              batch_size=config.batch_size)
  return Feed(images, labels, num_train, steps, permute, _gather), data


def chunks(steps: int, every: int):
  """Splits an epoch's steps into near-equal dispatches of about ``every`` steps."""
  n = max(1, round(steps / max(1, every)))
  return [len(c) for c in np.array_split(np.arange(steps), n)]


def chunk_fn(step, mesh, *, gather=_gather, mode: str = 'scan', per_model: bool = False,
             compiler_options=None):
  """(state, images, labels, idx, rng, start, n) -> (state, metrics summed over
  steps start .. start + n − 1 of the epoch), n static. ``step(state, batch,
  rng)`` is pure; idx is the epoch's (steps, B) row indices, or (K, steps, B)
  with ``per_model`` (one order per model, stacked into a (K, B, ...) batch).
  Rows are picked inside the jit, so no slicing op runs (or compiles) per chunk.
  ``compiler_options``: XLA's options for the step's program (train.compiler_options)."""
  sharding = (NamedSharding(mesh, P(None, parallel.AXIS)) if per_model
              else parallel.batch_sharded(mesh))
  donate = (0,) if jax.default_backend() != 'cpu' else ()

  def one_step(state, images, labels, idx, i, rng):
    rows = jax.lax.dynamic_index_in_dim(idx, i, 1 if per_model else 0, keepdims=False)
    if per_model:
      x, y = (jnp.stack(a) for a in zip(*(gather(images, labels, r) for r in rows)))
    else:
      x, y = gather(images, labels, rows)
    batch = jax.lax.with_sharding_constraint({'image': x, 'label': y}, sharding)
    return step(state, batch, rng)

  if mode == 'step':   # one compiled step for every chunk size
    one = jax.jit(one_step, donate_argnums=donate, compiler_options=compiler_options)
    add = jax.jit(functools.partial(jax.tree_util.tree_map, jnp.add))

    def run_steps(state, images, labels, idx, rng, start, n):
      totals = None
      for i in range(start, start + n):
        state, metrics = one(state, images, labels, idx, i, rng)
        totals = metrics if totals is None else add(totals, metrics)
      return state, totals

    return run_steps

  def run_scan(state, images, labels, idx, rng, start, n):
    body = lambda state, i: one_step(state, images, labels, idx, i, rng)
    state, metrics = jax.lax.scan(body, state, start + jnp.arange(n))
    return state, jax.tree_util.tree_map(lambda m: jnp.sum(m, 0), metrics)

  return jax.jit(run_scan, static_argnums=6, donate_argnums=donate,
                 compiler_options=compiler_options)


def train(run_chunk, state, feed_, idx, rng, *, epoch: int, every: int, batch_size: int):
  """Runs one epoch's steps in chunks: (state, mean step metrics but the gradient
  norm (numpy; a model axis for K models), seconds, finite: whether each model's
  loss stayed finite).
  It stops early once no model's loss is finite."""
  t0, done, totals = time.time(), 0, None
  for n in chunks(feed_.steps, every):
    state, sums = run_chunk(state, feed_.images, feed_.labels, idx, rng, done, n)
    sums = jax.device_get(sums)
    totals = sums if totals is None else jax.tree_util.tree_map(np.add, totals, sums)
    done += n
    finite = np.isfinite(totals['loss'])
    if not np.any(finite):
      break
    if done < feed_.steps:
      logging.info('epoch %d: %d/%d steps (%.0f%%), loss %.4f, %.0f img/s', epoch, done,
                   feed_.steps, 100 * done / feed_.steps, float(np.mean(totals['loss'])) / done,
                   done * batch_size * np.size(finite) / (time.time() - t0))
  means = {name: v / done for name, v in totals.items() if name != 'grad_norm'}
  return state, means, time.time() - t0, finite


def nonfinite_error(config, epoch: int, loss) -> str:
  """The one line for a run whose training loss became ``loss`` in ``epoch``."""
  return (f'training loss became {loss} in epoch {epoch}; lower config.learning_rate '
          f'(now {config.learning_rate}) or set config.grad_clip_norm=1.0 — the last '
          'good checkpoint is kept')
