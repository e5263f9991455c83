"""The training loop: config -> data -> state -> epochs -> metrics/checkpoints.

Speed comes from keeping the host out of the way: the whole dataset lives on
the device as uint8 (60,000 x 784 B = 47 MB; with per-device shards each
device holds only its 1/D, data/shards.py); each epoch draws a permutation
on the device and runs its steps as ``lax.scan`` chunks — one dispatch per
``log_every_steps`` steps, no per-step host round trip. Batches are gathered,
normalized (x = p/255) and sharded over the devices inside the compiled code.

Randomness is a pure function of (seed, epoch, step): a resumed run replays
exactly what an uninterrupted one would have done.
"""
import dataclasses
import functools
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from mnist_jax import checkpoint, parallel, train, validate, writers
from mnist_jax.data import pipeline, preprocess, shards
from mnist_jax.errors import UserError


def _gather(images, labels, idx):
  return images[idx], labels[idx]


def _chunk_fn(mesh, standardize: bool, gather=_gather, mode: str = 'scan'):
  """Runs a (k, B) block of batch indices as k train steps, returning the state
  and the metrics summed over the block. ``gather`` reads one batch of rows
  (shards.gather_fn for per-device shards). ``mode`` 'scan': one dispatch of
  jit(lax.scan(train_step)); 'step': k dispatches of jit(train_step), summed on
  the device — no while loop, in which XLA:CPU's own convolutions run many
  times slower (jax#12868, experiments/PERFORMANCE.md)."""
  sharding = parallel.batch_sharded(mesh)
  donate = (0,) if jax.default_backend() != 'cpu' else ()

  def step(state, images, labels, batch_idx, rng, i):
    x, y = gather(images, labels, batch_idx)
    batch = {'image': preprocess.normalize(x, standardize=standardize), 'label': y}
    batch = jax.lax.with_sharding_constraint(batch, sharding)
    return train.train_step(state, batch, jax.random.fold_in(rng, i))

  if mode == 'step':
    one, add = jax.jit(step, donate_argnums=donate), jax.jit(functools.partial(
        jax.tree_util.tree_map, jnp.add))

    def run_steps(state, images, labels, idx, rng, first_step):
      totals = None
      for i in range(idx.shape[0]):
        state, metrics = one(state, images, labels, idx[i], rng, first_step + i)
        totals = metrics if totals is None else add(totals, metrics)
      return state, totals

    return run_steps

  def run(state, images, labels, idx, rng, first_step):
    def body(state, inputs):
      i, batch_idx = inputs
      return step(state, images, labels, batch_idx, rng, first_step + i)

    state, metrics = jax.lax.scan(body, state, (jnp.arange(idx.shape[0]), idx))
    return state, jax.tree_util.tree_map(jnp.sum, metrics)

  return jax.jit(run, donate_argnums=donate)


def batch_order(key, num_train: int, steps: int, batch_size: int):
  """An epoch's (steps, B) row indices: the first steps·B of a permutation of
  0..N−1 (the remainder waits for another epoch's permutation)."""
  return jax.random.permutation(key, num_train)[:steps * batch_size].reshape(
      steps, batch_size)


def make_eval_fn(mesh, standardize: bool, batch_size: int):
  """jit(eval_step) on one padded batch of ``batch_size``: one compilation serves
  every split (val and test differ in length) and, unlike a scan over the
  batches, it runs XLA:CPU's convolutions outside a while loop (PERFORMANCE.md)."""
  sharding = parallel.batch_sharded(mesh)

  @jax.jit
  def run(state, images, labels, mask):
    batch = jax.lax.with_sharding_constraint(
        {'image': images, 'label': labels, 'mask': mask}, sharding)
    batch['image'] = preprocess.normalize(batch['image'], standardize=standardize)
    return train.eval_step(state, batch)

  run.batch_size = batch_size
  return run


def padded_split(images, labels, batch_size, mesh):
  """Pads a split to a multiple of batch_size (mask 0 on padding), on device."""
  n = len(labels)
  pad = -n % batch_size
  mask = np.concatenate([np.ones(n, np.float32), np.zeros(pad, np.float32)])
  images = np.concatenate([images, np.zeros((pad,) + images.shape[1:], images.dtype)])
  labels = np.concatenate([labels, np.zeros(pad, labels.dtype)])
  return parallel.replicate((images, labels, mask), mesh)


def evaluate(state, split, eval_fn) -> dict:
  """{'loss', 'accuracy'} means over a padded device split: the per-batch sums
  are added on the device and fetched once."""
  b = eval_fn.batch_size
  parts = [eval_fn(state, *(a[i:i + b] for a in split))
           for i in range(0, split[2].shape[0], b)]
  sums = jax.device_get(jax.tree_util.tree_map(lambda *v: sum(v), *parts))
  return {'loss': float(sums['loss'] / sums['count']),
          'accuracy': float(sums['correct'] / sums['count'])}


def prepare_workdir(workdir: str) -> None:
  """Creates ``workdir`` and checks that it is writable, before any work."""
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, f'.write_test.{jax.process_index()}')  # one per host
    with open(probe, 'w') as f:
      f.write('ok')
    os.remove(probe)
  except OSError as e:
    raise UserError(f'cannot write to workdir {workdir} ({e.strerror}); '
                    'pass a writable --workdir') from None


def record_config(config, workdir: str, resuming: bool) -> None:
  """Writes ``workdir/config.json``; refuses to resume a run whose config differs."""
  path = os.path.join(workdir, 'config.json')
  current = json.loads(config.to_json_best_effort())
  if resuming and os.path.exists(path):
    with open(path) as f:
      saved = json.load(f)
    changed = sorted(k for k in set(saved) | set(current)
                     if k != 'num_epochs' and saved.get(k) != current.get(k))
    if changed:
      raise UserError(f'workdir {workdir} holds a run with a different config '
                      f'({", ".join(changed)} differ); use a new --workdir to start '
                      'a new run (only num_epochs may change when resuming)')
  writers.write_json_atomic(path, current)


def _chunks(steps: int, every: int):
  """Splits an epoch's steps into near-equal dispatches of about ``every`` steps."""
  n = max(1, round(steps / max(1, every)))
  return [len(c) for c in np.array_split(np.arange(steps), n)]


def train_and_evaluate(config, workdir: str) -> dict:
  """Trains ``config`` in ``workdir`` (resuming if it holds checkpoints) and
  returns the summary also written to ``workdir/summary.json``."""
  start = time.time()
  mesh = parallel.make_mesh(config.num_devices)
  num_devices = mesh.devices.size
  validate.check(config, num_devices)
  prepare_workdir(workdir)
  data = pipeline.load(config.data)
  num_train = len(data.train_labels)
  if num_train < config.batch_size:
    raise UserError(f'batch_size {config.batch_size} exceeds the {num_train} training '
                    'images; lower config.batch_size')
  sharded = bool(config.data.per_device_shards) or jax.process_count() > 1
  if sharded:   # keep only this process's devices' rows (data/shards.py)
    x, y, rows = shards.local_rows(data.train_images, data.train_labels, mesh)
    data = dataclasses.replace(data, train_images=x, train_labels=y)
    num_train = rows * num_devices
  rng = jax.random.key(config.seed)
  init_rng, train_rng = jax.random.split(rng)
  state = train.create_train_state(config, init_rng, num_train=num_train,
                                   num_classes=data.num_classes)
  num_params = sum(int(np.prod(p.shape)) for p in jax.tree_util.tree_leaves(state.params))
  ckpt_dir = os.path.join(workdir, 'checkpoints')
  latest = checkpoint.manager(os.path.join(ckpt_dir, 'latest'), config.keep_checkpoints)
  best = checkpoint.manager(os.path.join(ckpt_dir, 'best'), 1, best=True)
  state, meta = checkpoint.restore(latest, state)
  record_config(config, workdir, resuming=meta is not None)
  start_epoch = meta['epoch'] if meta else 0
  history = meta['history'] if meta else []
  if meta:
    logging.info('Resuming %s from epoch %d.', workdir, start_epoch)
  state = parallel.replicate(state, mesh)

  standardize = config.data.standardize
  if sharded:
    images, labels = shards.place(data.train_images, data.train_labels, rows, mesh)
  else:
    images, labels = parallel.replicate((data.train_images, data.train_labels), mesh)
  val = padded_split(data.val_images, data.val_labels, config.eval_batch_size, mesh)
  test = padded_split(data.test_images, data.test_labels, config.eval_batch_size, mesh)
  eval_fn = make_eval_fn(mesh, standardize, config.eval_batch_size)
  steps = train.steps_per_epoch(config, num_train)
  if sharded:
    chunk_fn = _chunk_fn(mesh, standardize, shards.gather_fn(mesh), config.loop_mode)
    permute = shards.permutation_fn(num_train, config.batch_size, mesh)
  else:
    chunk_fn = _chunk_fn(mesh, standardize, mode=config.loop_mode)
    permute = jax.jit(functools.partial(batch_order, num_train=num_train, steps=steps,
                                        batch_size=config.batch_size))
  writer = writers.MetricWriter(workdir, json.loads(config.to_json_best_effort()))
  writer.truncate_after(start_epoch)
  logging.info('Training %s (%d params) on %d %s device(s): %d train / %d val / %d '
               'test images, %d steps of %d per epoch.', config.model.name, num_params,
               num_devices, jax.default_backend(), num_train, len(data.val_labels),
               len(data.test_labels), steps, config.batch_size)
  try:
    for epoch in range(start_epoch + 1, config.num_epochs + 1):
      record = _train_epoch(config, epoch, state, chunk_fn, permute, images, labels,
                            train_rng, steps)
      state = record.pop('state')
      if len(data.val_labels):
        record.update({f'val_{k}': v for k, v in evaluate(state, val, eval_fn).items()})
      record.update({f'test_{k}': v for k, v in evaluate(state, test, eval_fn).items()})
      history.append(record)
      last = epoch == config.num_epochs
      every = config.checkpoint_every_epochs
      if last or (every and epoch % every == 0):
        meta = {'epoch': epoch, 'history': history}
        checkpoint.save(latest, epoch, state, meta)
        if 'val_accuracy' in record:
          checkpoint.save(best, epoch, state, {**meta, 'val_accuracy': record['val_accuracy']})
      writer.write_epoch(record)
      logging.info('epoch %d/%d: train loss %.4f acc %.4f | val %s | test loss %.4f '
                   'acc %.4f | %.0f img/s', epoch, config.num_epochs,
                   record['train_loss'], record['train_accuracy'],
                   f"{record.get('val_accuracy', float('nan')):.4f}",
                   record['test_loss'], record['test_accuracy'], record['images_per_s'])
  finally:
    latest.wait_until_finished()
    best.wait_until_finished()
    writer.close()
  summary = _summary(config, history, num_params, mesh, time.time() - start)
  summary['train_images_in_process'] = len(data.train_labels)
  writers.write_json_atomic(os.path.join(workdir, 'summary.json'), summary)
  if config.write_plots:
    from mnist_jax import plots  # pylint: disable=g-import-not-at-top  (matplotlib: 0.6 s)
    plots.write_all(workdir, config, state, data)  # workdir/plots/*.png + TensorBoard
  return summary


def _train_epoch(config, epoch, state, chunk_fn, permute, images, labels, train_rng,
                 steps) -> dict:
  """Runs one epoch as scan chunks; returns the epoch record (and 'state')."""
  epoch_rng = jax.random.fold_in(train_rng, epoch)
  perm_rng, step_rng = jax.random.split(epoch_rng)
  idx = permute(perm_rng)
  t0 = time.time()
  done, totals = 0, None
  for k in _chunks(steps, config.log_every_steps):
    state, sums = chunk_fn(state, images, labels, idx[done:done + k], step_rng, done)
    sums = jax.device_get(sums)
    totals = sums if totals is None else jax.tree_util.tree_map(np.add, totals, sums)
    done += k
    if not np.isfinite(sums['loss']):
      raise UserError(
          f'training loss became {sums["loss"]} in epoch {epoch} (steps {done - k}-{done}); '
          f'lower config.learning_rate (now {config.learning_rate}) or set '
          'config.grad_clip_norm=1.0 — the last good checkpoint is kept')
    if done < steps:
      logging.info('epoch %d: %d/%d steps (%.0f%%), loss %.4f, %.0f img/s', epoch, done,
                   steps, 100 * done / steps, totals['loss'] / done,
                   done * config.batch_size / (time.time() - t0))
  seconds = time.time() - t0
  return {'epoch': epoch, 'state': state,
          'train_loss': float(totals['loss'] / steps),
          'train_accuracy': float(totals['accuracy'] / steps),
          'train_time_s': seconds,
          'images_per_s': steps * config.batch_size / seconds}


def _summary(config, history, num_params, mesh, wall_s) -> dict:
  """The end-of-run record: final and best-validation metrics, speed, config."""
  final = history[-1]
  with_val = [h for h in history if 'val_accuracy' in h]
  best = max(with_val, key=lambda h: h['val_accuracy']) if with_val else final
  rates = [h['images_per_s'] for h in history[1:]] or [final['images_per_s']]
  return {
      'test_accuracy': final['test_accuracy'], 'test_loss': final['test_loss'],
      'val_accuracy': final.get('val_accuracy'), 'val_loss': final.get('val_loss'),
      'best_epoch': best['epoch'], 'best_val_accuracy': best.get('val_accuracy'),
      'test_accuracy_at_best_val': best['test_accuracy'],
      'epochs': final['epoch'],
      'train_time_s': sum(h['train_time_s'] for h in history),
      'wall_time_s': wall_s,
      'images_per_s': float(np.median(rates)),
      'num_params': num_params,
      'devices': f'{mesh.devices.size} x {mesh.devices.flat[0].device_kind}',
      'jax_version': jax.__version__,
      'config': json.loads(config.to_json_best_effort()),
  }
