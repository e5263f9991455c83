"""The one epoch driver: K ≥ 1 models that share a data order, from config to outputs.

K = 1 is a run (``train_and_evaluate``); K > 1 are vectorized trials
(engine/stacked.py) or the members of one ensemble run (engine/ensemble.py: one
workdir, one checkpoint of the stacked members, one record per epoch from the
members' probabilities). Every epoch e, for every model k at once:

  π = permutation(fold_in(train_key_k, e))   (one π, shared, when seeds are equal)
  for t = 1 .. ⌊N / B⌋:  (w_k, s_k), m_k = train_step((w_k, s_k), batch_t(π), key_e)
  val / test accuracy of every w_k (and of its weight EMA, config.ema_decay > 0);
  per run: metrics.jsonl, checkpoints, summary.json (with NLL and ECE)

train_step folds its step counter into key_e, so randomness is a pure function
of (seed, epoch, step): a resumed run replays what an uninterrupted one does.

Speed comes from keeping the host out of the way: the dataset lives on the
device as uint8 (60,000 x 784 B = 47 MB; with per-device shards each device
holds only its 1/D, parallel/shards.py); each epoch draws its permutation on
the device and runs its steps in chunks of ``log_every_steps``: one dispatch
of jit(lax.scan(step)) per chunk (loop_mode='scan'), or one jit(step) per
step with the metrics summed on the device (loop_mode='step': no while loop,
in which XLA:CPU's own convolutions run many times slower, jax#12868).
Batches are gathered, preprocessed and sharded over the devices inside the
compiled code.

One policy for every K: a model whose loss becomes non-finite stops alone
(a run, K = 1, then ends with that one line); 'latest' checkpoints every
``checkpoint_every_epochs`` and at the end; 'best' whenever the validation
accuracy improves on every earlier epoch (so it is the epoch summary.json
names); a workdir with checkpoints resumes; each workdir is locked while it
trains. The engine draws no plots: commands ask for them afterwards.
``on_epoch(k, record) -> stop``, if given, sees model k's metrics after each
epoch (a search's pruner); True stops model k there, with its 'latest'
checkpoint and summary.json (``stopped_early``) written at that epoch.
"""
import contextlib
import dataclasses
import functools
import json
import os
import time
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax.sharding import NamedSharding, PartitionSpec as P

from mnist_jax import parallel, train as train_lib
from mnist_jax.config import validate
from mnist_jax.data import describe, pipeline
from mnist_jax.engine import (checkpoint, ensemble, evaluation, stacked,
                              workdir as workdir_lib, writers)
from mnist_jax.errors import UserError
from mnist_jax.parallel import shards


@dataclasses.dataclass
class Outcome:
  """What training one model gave: its summary, or the error that stopped it."""
  summary: Optional[dict] = None
  error: Optional[UserError] = None
  state: Any = None      # the final TrainState (single-run form)


@dataclasses.dataclass
class Results:
  outcomes: list         # one Outcome per model, in the order of the configs
  data: pipeline.Dataset


def train_and_evaluate(config, workdir: str) -> dict:
  """Trains ``config`` in ``workdir`` (resuming if it holds checkpoints) and
  returns the summary also written to ``workdir/summary.json``."""
  outcome = train([config], [workdir]).outcomes[0]
  if outcome.error is not None:
    raise outcome.error
  return outcome.summary


def batch_order(key, num_train: int, steps: int, batch_size: int):
  """An epoch's (steps, B) row indices: the first steps·B of a permutation of
  0..N−1 (the remainder waits for another epoch's permutation)."""
  return jax.random.permutation(key, num_train)[:steps * batch_size].reshape(
      steps, batch_size)


def chunks(steps: int, every: int):
  """Splits an epoch's steps into near-equal dispatches of about ``every`` steps."""
  n = max(1, round(steps / max(1, every)))
  return [len(c) for c in np.array_split(np.arange(steps), n)]


def _gather(images, labels, idx):
  return images[idx], labels[idx]


def chunk_fn(group_step, mesh, *, shared: bool = True, gather=_gather, mode: str = 'scan'):
  """(state, images, labels, idx, rng, keep, start, n) -> (state, metrics summed
  over steps start .. start + n - 1 of the epoch): idx is the epoch's (steps, B)
  row indices (shared) or (K, steps, B) (one order per model), rng one key
  (shared) or (K,) keys, n static. ``gather`` reads one batch of rows
  (shards.gather_fn for per-device shards). Rows are picked inside the jit, so
  no slicing op runs (or compiles) per chunk or step."""
  sharding = (parallel.batch_sharded(mesh) if shared
              else NamedSharding(mesh, P(None, parallel.AXIS)))
  donate = (0,) if jax.default_backend() != 'cpu' else ()
  axis = 0 if shared else 1

  def step(state, images, labels, idx, i, rng, keep):
    batch_idx = jax.lax.dynamic_index_in_dim(idx, i, axis, keepdims=False)
    if shared:
      x, y = gather(images, labels, batch_idx)
    else:
      x, y = (jnp.stack(a) for a in zip(*(gather(images, labels, rows) for rows in batch_idx)))
    batch = jax.lax.with_sharding_constraint({'image': x, 'label': y}, sharding)
    return group_step(state, batch, rng, keep)

  if mode == 'step':   # one compiled step for every chunk size
    one = jax.jit(step, donate_argnums=donate)
    add = jax.jit(functools.partial(jax.tree_util.tree_map, jnp.add))

    def run_steps(state, images, labels, idx, rng, keep, start, n):
      totals = None
      for i in range(start, start + n):
        state, metrics = one(state, images, labels, idx, i, rng, keep)
        totals = metrics if totals is None else add(totals, metrics)
      return state, totals

    return run_steps

  def run(state, images, labels, idx, rng, keep, start, n):
    body = lambda state, i: step(state, images, labels, idx, i, rng, keep)
    state, metrics = jax.lax.scan(body, state, start + jnp.arange(n))
    return state, jax.tree_util.tree_map(lambda m: jnp.sum(m, 0), metrics)

  return jax.jit(run, static_argnums=7, donate_argnums=donate)


@dataclasses.dataclass
class _Feed:
  """The training set on the devices and how an epoch's batches are drawn."""
  images: Any
  labels: Any
  num_train: int
  steps: int
  permute: Any           # key -> (steps, B) row indices
  gather: Any


def _feed(config, data, mesh) -> tuple:
  """(feed, data): the training rows on the devices (this process's only, with
  per-device shards or several processes) and the matching permutation/gather."""
  num_devices = mesh.devices.size
  if bool(config.data.per_device_shards) or jax.process_count() > 1:
    x, y, rows = shards.local_rows(data.train_images, data.train_labels, mesh)
    data = dataclasses.replace(data, train_images=x, train_labels=y)
    num_train = rows * num_devices
    images, labels = shards.place(x, y, rows, mesh)
    return _Feed(images, labels, num_train, max(1, num_train // config.batch_size),
                 shards.permutation_fn(num_train, config.batch_size, mesh),
                 shards.gather_fn(mesh)), data
  num_train = len(data.train_labels)
  images, labels = parallel.replicate((data.train_images, data.train_labels), mesh)
  steps = max(1, num_train // config.batch_size)
  permute = jax.jit(functools.partial(batch_order, num_train=num_train, steps=steps,
                                      batch_size=config.batch_size))
  return _Feed(images, labels, num_train, steps, permute, _gather), data


def train(configs, workdirs, on_epoch=None) -> Results:
  """Trains a group of models (one signature, engine/stacked.py) into their
  ``workdirs``; returns each model's Outcome and the data they trained on.
  ``on_epoch(k, record) -> bool``: True stops model k after that epoch."""
  start, ref, k_models = time.time(), configs[0], len(configs)
  mesh = parallel.make_mesh(ref.num_devices)
  for c in configs:
    validate.check(c, mesh.devices.size)
  if k_models > 1 and len(stacked.groups(configs)) != 1:
    raise ValueError('driver.train needs configs of one signature (stacked.groups)')
  ensemble.expand(configs)  # an ensemble trains alone
  data_start = time.time()
  data = pipeline.load(ref.data)  # before any file is written: a failure leaves nothing
  # what the data is (μ, σ, K, names, N), recorded in each run's config.json
  configs = [describe.resolve(c, data) for c in configs]
  ref = configs[0]
  logging.info('Data: %d train / %d val / %d test images read in %.2f s.',
               len(data.train_labels), len(data.val_labels), len(data.test_labels),
               time.time() - data_start)
  if len(data.train_labels) < ref.batch_size:
    raise UserError(f'batch_size {ref.batch_size} exceeds the {len(data.train_labels)} '
                    'training images; lower config.batch_size')
  ensemble.check_memory(ref, data.num_classes)
  with contextlib.ExitStack() as stack:
    for w in workdirs:
      workdir_lib.prepare(w)
      stack.enter_context(workdir_lib.lock(w))
    outcomes = _train_locked(configs, workdirs, data, mesh, start, on_epoch)
  return Results(outcomes, data)


def _train_locked(configs, workdirs, data, mesh, start, on_epoch=None) -> list:
  ref, k_models, init_start = configs[0], len(configs), time.time()
  feed, data = _feed(ref, data, mesh)
  group = stacked.create(ensemble.expand(configs), num_train=feed.num_train,
                         num_classes=data.num_classes)
  ckpt = [checkpoint.RunCheckpoints(os.path.join(w, 'checkpoints'), c.keep_checkpoints)
          for c, w in zip(configs, workdirs)]
  restored = [run.resume(ensemble.run_state(group, k)) for k, run in enumerate(ckpt)]
  epochs = {meta['epoch'] if meta else 0 for _, meta in restored}
  if len(epochs) > 1:
    raise UserError(f'runs {", ".join(workdirs)} hold checkpoints of different epochs '
                    f'{sorted(epochs)}; resume each on its own (without --vectorize)')
  start_epoch = epochs.pop()
  if start_epoch:
    ensemble.load_runs(group, [s for s, _ in restored])
    logging.info('Resuming %s from epoch %d.', ', '.join(workdirs), start_epoch)
  histories = [list(meta['history']) if meta else [] for _, meta in restored]
  metric_writers = []
  for c, w in zip(configs, workdirs):
    workdir_lib.record_config(c, w, resuming=start_epoch > 0)
    metric_writers.append(writers.MetricWriter(w, json.loads(c.to_json_best_effort())))
    metric_writers[-1].truncate_after(start_epoch)
  group.state = parallel.replicate(group.state, mesh)
  raw_splits = {'val': (data.val_images, data.val_labels),
                'test': (data.test_images, data.test_labels)}
  splits = {name: evaluation.padded_split(x, y, ref.eval_batch_size, mesh)  # an ensemble:
            for name, (x, y) in raw_splits.items()                   # ensemble.record
            if len(y) and not ensemble.is_ensemble(group)}
  eval_fn = evaluation.make_eval_fn(mesh, group.eval_step)
  run_chunk = chunk_fn(group.train_step, mesh, shared=group.shared_data,
                       gather=feed.gather, mode=ref.loop_mode)
  num_params = sum(int(np.prod(p.shape)) for p in jax.tree_util.tree_leaves(
      group.templates[0].params))
  logging.info('Training %d x %s (%d params) on %d %s device(s): %d train / %d val / %d '
               'test images, %d steps of %d per epoch (set up in %.2f s).', k_models,
               ref.model.name, num_params, mesh.devices.size, jax.default_backend(),
               feed.num_train, len(data.val_labels), len(data.test_labels), feed.steps,
               ref.batch_size, time.time() - init_start)
  errors, run_errors = [None] * group.size, [None] * k_models
  stopped = {}   # run k -> its state when on_epoch stopped it
  try:
    for epoch in range(start_epoch + 1, ref.num_epochs + 1):
      totals, seconds = _train_epoch(ref, epoch, group, feed, run_chunk, errors)
      eval_start = time.time()
      # An ensemble's members are evaluated by ensemble.record, from one pass of their
      # probabilities that gives every split metric: no eval_fn pass for them here.
      evals = {} if ensemble.is_ensemble(group) else {
          name: evaluation.evaluate(group.state, split, eval_fn)
          for name, split in splits.items()}
      if ref.ema_decay and not ensemble.is_ensemble(group):   # '<split>_<metric>_ema'
        evals.update({f'{name}_ema': evaluation.evaluate(train_lib.ema_state(group.state),
                                                         split, eval_fn)
                      for name, split in splits.items()})
      times = (seconds, time.time() - eval_start)
      records = [_record(group, k, epoch, totals, evals, times, feed.steps)
                 for k in range(group.size)]
      if ensemble.is_ensemble(group):
        records = [ensemble.record(group, records, raw_splits, ref.eval_batch_size)]
      run_errors = ensemble.run_errors(group, errors)
      for k in range(k_models):
        if run_errors[k] is None and k not in stopped and _finish_epoch(
            group, k, records[k], histories[k], ckpt[k], metric_writers[k], on_epoch):
          stopped[k] = ensemble.run_value(group, k)
      if all(e is not None or k in stopped for k, e in enumerate(run_errors)):
        break
  finally:
    for run in ckpt:
      run.wait_until_finished()
    for w in metric_writers:
      w.close()
  outcomes = []
  for k, (c, w) in enumerate(zip(configs, workdirs)):
    if run_errors[k] is not None:
      outcomes.append(Outcome(error=run_errors[k]))
      continue
    summary = summarize(c, histories[k], num_params, mesh, time.time() - start)
    summary['train_images_in_process'] = len(data.train_labels)
    if k_models > 1:
      summary['vectorized_trials'] = k_models
    value = stopped[k] if k in stopped else ensemble.run_value(group, k)
    if ensemble.is_ensemble(group):
      summary.update(ensemble.summary(group, histories[k]))
    else:   # calibration of the final weights (an ensemble's is in its records)
      summary.update(evaluation.calibration(value, raw_splits, ref.eval_batch_size))
    if k in stopped:
      summary['stopped_early'] = True
    writers.write_json_atomic(os.path.join(w, 'summary.json'), summary)
    outcomes.append(Outcome(summary=summary, state=value))
  return outcomes


def _train_epoch(config, epoch, group, feed, run_chunk, errors):
  """Runs one epoch in chunks; marks the models whose loss became non-finite in
  ``errors``; returns (metric sums of shape (K,), seconds)."""
  keys = [jax.random.split(jax.random.fold_in(r, epoch)) for r in group.train_rngs]
  if group.shared_data:   # (perm_key, step_key) of the epoch, per model
    idx, step_keys = feed.permute(keys[0][0]), keys[0][1]
  else:
    idx = jnp.stack([feed.permute(k[0]) for k in keys])
    step_keys = jnp.stack([k[1] for k in keys])
  t0, done, totals, steps = time.time(), 0, None, feed.steps
  for n in chunks(steps, config.log_every_steps):
    group.state, sums = run_chunk(group.state, feed.images, feed.labels, idx,
                                  step_keys, group.keep, done, n)
    sums = jax.device_get(sums)
    totals = sums if totals is None else jax.tree_util.tree_map(np.add, totals, sums)
    done += n
    for k, loss in enumerate(sums['loss']):
      if errors[k] is None and not np.isfinite(loss):
        errors[k] = UserError(
            f'training loss became {loss} in epoch {epoch} (steps {done - n}-{done}); '
            f'lower config.learning_rate (now {group.configs[k].learning_rate}) or set '
            'config.grad_clip_norm=1.0 — the last good checkpoint is kept')
    if all(e is not None for e in errors):
      break
    if done < steps:
      logging.info('epoch %d: %d/%d steps (%.0f%%), loss %.4f, %.0f img/s', epoch, done,
                   steps, 100 * done / steps, float(np.mean(totals['loss'])) / done,
                   done * config.batch_size * group.size / (time.time() - t0))
  return totals, time.time() - t0


def _record(group, k, epoch, totals, evals, times, steps) -> dict:
  """Model k's epoch record (``times`` = its training and evaluation seconds)."""
  config, (seconds, eval_seconds) = group.configs[k], times
  record = {'epoch': epoch,
            **{f'train_{name}': float(v[k] / steps) for name, v in totals.items()
               if name != 'grad_norm'},
            'train_time_s': seconds, 'eval_time_s': eval_seconds,
            'images_per_s': steps * config.batch_size / seconds}
  for name, out in evals.items():
    split, _, variant = name.partition('_')
    tail = f'_{variant}' if variant else ''
    record[f'{split}_loss{tail}'] = float(out['loss'][k])
    record[f'{split}_accuracy{tail}'] = float(out['accuracy'][k])
  return record


def _finish_epoch(group, k, record, history, ckpt, writer, on_epoch=None) -> bool:
  """Records run k's epoch: metrics, 'latest' and (if val improved) 'best'
  checkpoints in ``ckpt`` (a checkpoint.RunCheckpoints; an ensemble run: its
  stacked members, group.configs[0]); returns
  whether ``on_epoch`` stops run k here."""
  config, epoch = group.configs[k], record['epoch']
  best_before = max((h['val_accuracy'] for h in history if 'val_accuracy' in h), default=None)
  history.append(record)
  stop = bool(on_epoch is not None and on_epoch(k, record))
  every = config.checkpoint_every_epochs
  latest_due = epoch == config.num_epochs or (every and epoch % every == 0) or stop
  improved = 'val_accuracy' in record and (best_before is None
                                           or record['val_accuracy'] > best_before)
  if latest_due or improved:
    state, meta = ensemble.run_state(group, k), {'epoch': epoch, 'history': history}
    if latest_due:
      checkpoint.save(ckpt.get('latest'), epoch, state, meta)
    if improved:
      checkpoint.save(ckpt.get('best'), epoch, state,
                      {**meta, 'val_accuracy': record['val_accuracy']})
  writer.write_epoch(record)
  logging.info('epoch %d/%d%s: train loss %.4f acc %.4f | val %s | test loss %.4f '
               'acc %.4f | %.0f img/s', epoch, config.num_epochs,
               ensemble.label(group, k), record['train_loss'],
               record['train_accuracy'], f"{record.get('val_accuracy', float('nan')):.4f}",
               record['test_loss'], record['test_accuracy'], record['images_per_s'])
  return stop


def summarize(config, history, num_params, mesh, wall_s) -> dict:
  """The contents of summary.json: final and best-validation metrics, speed, config."""
  final = history[-1]
  with_val = [h for h in history if 'val_accuracy' in h]
  best = max(with_val, key=lambda h: h['val_accuracy']) if with_val else final
  rates = [h['images_per_s'] for h in history[1:]] or [final['images_per_s']]
  return {
      'test_accuracy': final['test_accuracy'], 'test_loss': final['test_loss'],
      'val_accuracy': final.get('val_accuracy'), 'val_loss': final.get('val_loss'),
      'best_epoch': best['epoch'], 'best_val_accuracy': best.get('val_accuracy'),
      'test_accuracy_at_best_val': best['test_accuracy'],
      **{key: v for key, v in final.items()   # weight EMA and calibration
         if key.startswith(('val_', 'test_')) and key.endswith(('_ema', '_nll', '_ece'))},
      'epochs': final['epoch'],
      'train_time_s': sum(h['train_time_s'] for h in history),
      'wall_time_s': wall_s,
      'images_per_s': float(np.median(rates)),
      'num_params': num_params,
      'devices': f'{mesh.devices.size} x {mesh.devices.flat[0].device_kind}',
      'jax_version': jax.__version__,
      'preprocessing': {'normalize': 'x = p / 255', 'augment': dict(config.augment),
                        'standardize': bool(config.data.standardize)},
      'config': json.loads(config.to_json_best_effort()),
  }
