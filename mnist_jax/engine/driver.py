"""The one epoch driver: K ≥ 1 models that share a data order, from config to outputs.

The group's K models form R runs of M members (engine/runs.py, chosen up
front): a run and vectorized trials are runs of one model, an ensemble is one
run of its M members (one workdir, one checkpoint of the stacked members).
Every epoch e, for every model k at once:

  π = permutation(fold_in(train_key_k, e))   (one π, shared, when seeds are equal)
  for t = 1 .. ⌊N / B⌋:  (w_k, s_k), m_k = train_step((w_k, s_k), batch_t(π), key_e)
  the one evaluation pass on validation (engine/evaluation.py: loss, accuracy,
  NLL, ECE of every run, raw and weight-EMA weights in one program)
  per run: metrics.jsonl, TensorBoard, checkpoints

and at the end, the test split once: for the last weights and for the weights
of e* (engine/selection.py, the one best-epoch rule), into summary.json.
Per-epoch records hold train and validation only; config.eval_test_every_epoch
adds the test split to every epoch (test curves; reading test every epoch
invites choosing on it, so nothing in the engine does).

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

One policy for every run: a run whose loss becomes non-finite stops alone
(a lone run then ends with that one line); 'latest' checkpoints every
``checkpoint_every_epochs`` and at the end; 'best' whenever e* moves (so it is
the epoch summary.json names); a workdir with checkpoints resumes (the e*
weights come back from 'best'); each workdir is locked while it trains. The
engine draws no plots: commands ask for them afterwards.
``on_epoch(k, record) -> stop``, if given, sees run k's record after each
epoch (a search's pruner); True stops run k there, with its 'latest'
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

from mnist_jax import parallel
from mnist_jax.config import validate
from mnist_jax.data import describe, pipeline
from mnist_jax.engine import (checkpoint, evaluation, memory, runs, selection, stacked,
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
  """(state, images, labels, idx, rng, dropout_rate, start, n) -> (state, metrics
  summed over steps start .. start + n - 1 of the epoch): idx is the epoch's
  (steps, B) row indices (shared) or (K, steps, B) (one order per model), rng one
  key (shared) or (K,) keys, dropout_rate the group's (stacked.Group), n static.
  ``gather`` reads one batch of rows (shards.gather_fn for per-device shards).
  Rows are picked inside the jit, so no slicing op runs (or compiles) per chunk
  or step."""
  sharding = (parallel.batch_sharded(mesh) if shared
              else NamedSharding(mesh, P(None, parallel.AXIS)))
  donate = (0,) if jax.default_backend() != 'cpu' else ()
  axis = 0 if shared else 1

  def step(state, images, labels, idx, i, rng, dropout_rate):
    batch_idx = jax.lax.dynamic_index_in_dim(idx, i, axis, keepdims=False)
    if shared:
      x, y = gather(images, labels, batch_idx)
    else:
      x, y = (jnp.stack(a) for a in zip(*(gather(images, labels, rows) for rows in batch_idx)))
    batch = jax.lax.with_sharding_constraint({'image': x, 'label': y}, sharding)
    return group_step(state, batch, rng, dropout_rate)

  if mode == 'step':   # one compiled step for every chunk size
    one = jax.jit(step, donate_argnums=donate)
    add = jax.jit(functools.partial(jax.tree_util.tree_map, jnp.add))

    def run_steps(state, images, labels, idx, rng, dropout_rate, start, n):
      totals = None
      for i in range(start, start + n):
        state, metrics = one(state, images, labels, idx, i, rng, dropout_rate)
        totals = metrics if totals is None else add(totals, metrics)
      return state, totals

    return run_steps

  def run(state, images, labels, idx, rng, dropout_rate, start, n):
    body = lambda state, i: step(state, images, labels, idx, i, rng, dropout_rate)
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
  runs.expand(configs)  # an ensemble trains alone
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
  memory.check_memory(ref, data.num_classes)
  with contextlib.ExitStack() as stack:
    for w in workdirs:
      workdir_lib.prepare(w)
      stack.enter_context(workdir_lib.lock(w))
    outcomes = _train_locked(configs, workdirs, data, mesh, start, on_epoch)
  return Results(outcomes, data)


@dataclasses.dataclass
class _Run:
  """What the epoch loop works on, set up once: R runs of a group of K models."""
  configs: list          # one per run
  workdirs: list
  data: pipeline.Dataset
  mesh: Any
  feed: _Feed
  group: stacked.Group
  layout: runs.Layout
  ckpt: list             # one checkpoint.RunCheckpoints per run
  histories: list        # one list of epoch records per run
  writers: list          # one writers.MetricWriter per run
  splits: dict           # name -> padded_split evaluated every epoch ('val'[, 'test'])
  eval_fn: Any           # evaluation.pass_fn of the group
  run_chunk: Any
  num_params: int
  start_epoch: int
  best: Any = None       # the model weights (params, batch_stats, ema) at each run's e*
  resumed_best: list = None   # per run: its state at e* when resumed (checkpoint form)
  frozen: Any = None     # the weights of runs on_epoch stopped, at their stop
  model_errors: list = None   # per model: the UserError that ended it, or None
  stopped: dict = dataclasses.field(default_factory=dict)   # run -> its value at the stop

  @property
  def model_weights(self) -> str:
    return self.configs[0].model_weights


def _train_locked(configs, workdirs, data, mesh, start, on_epoch=None) -> list:
  run = _set_up(configs, workdirs, data, mesh)
  try:
    for epoch in range(run.start_epoch + 1, configs[0].num_epochs + 1):
      if _epoch(run, epoch, on_epoch):
        break
  finally:
    for c in run.ckpt:
      c.wait_until_finished()
    for w in run.writers:
      w.close()
  return _outcomes(run, time.time() - start)


def _set_up(configs, workdirs, data, mesh) -> _Run:
  """The feed, the group (resumed where checkpoints exist), the writers and the
  one evaluation pass of the run(s). Everything that can refuse a resume is
  checked before any file changes; a damaged checkpoint moved aside (logged) is
  the one change a refused resume can leave."""
  ref, init_start = configs[0], time.time()
  feed, data = _feed(ref, data, mesh)
  layout = runs.layout(configs)
  group = stacked.create(runs.expand(configs), num_train=feed.num_train,
                         num_classes=data.num_classes)
  ckpt = [checkpoint.RunCheckpoints(os.path.join(w, 'checkpoints'), c.keep_checkpoints)
          for c, w in zip(configs, workdirs)]
  for c, w, k in zip(configs, workdirs, ckpt):
    if k.steps('latest'):
      workdir_lib.check_resume(c, w)
  start_epoch, histories, best, resumed_best = _resume(group, layout, ckpt, workdirs)
  metric_writers = []
  for c, w, h in zip(configs, workdirs, histories):   # decided: from here on, files change
    workdir_lib.claim(w)
    workdir_lib.record_config(c, w)
    metric_writers.append(writers.MetricWriter(w, json.loads(c.to_json_best_effort()), h))
  group.state = parallel.replicate(group.state, mesh)
  every_epoch = [('val', data.val_images, data.val_labels)] + (
      [('test', data.test_images, data.test_labels)] if ref.eval_test_every_epoch else [])
  splits = {name: evaluation.padded_split(x, y, ref.eval_batch_size, mesh)
            for name, x, y in every_epoch if len(y)}
  num_params = sum(int(np.prod(p.shape)) for p in jax.tree_util.tree_leaves(
      group.templates[0].params))
  run = _Run(configs, workdirs, data, mesh, feed, group, layout, ckpt, histories,
             metric_writers, splits,
             evaluation.pass_fn(mesh, stacked=group.stacked, members=layout.members),
             chunk_fn(group.train_step, mesh, shared=group.shared_data,
                      gather=feed.gather, mode=ref.loop_mode),
             num_params, start_epoch, best=best, resumed_best=resumed_best,
             model_errors=[None] * group.size)
  logging.info('Training %d x %s (%d params) on %d %s device(s): %d train / %d val / %d '
               'test images, %d steps of %d per epoch (set up in %.2f s).', group.size,
               ref.model.name, num_params, mesh.devices.size, jax.default_backend(),
               feed.num_train, len(data.val_labels), len(data.test_labels), feed.steps,
               ref.batch_size, time.time() - init_start)
  return run


def _resume(group, layout, ckpt, workdirs) -> tuple:
  """(start epoch, histories, weights at e*, each run's state at e*) from the runs'
  checkpoints; the group's state is set to their 'latest' (a fresh run: epoch 0,
  empty histories, None, Nones). Reads only, but for damaged checkpoints moved aside."""
  restored = [c.resume(runs.run_state(group, layout, r)) for r, c in enumerate(ckpt)]
  epochs = {meta['epoch'] if meta else 0 for _, meta in restored}
  if len(epochs) > 1:
    raise UserError(f'runs {", ".join(workdirs)} hold checkpoints of different epochs '
                    f'{sorted(epochs)}; resume each on its own (without --vectorize)')
  start_epoch = epochs.pop()
  histories = [list(meta['history']) if meta else [] for _, meta in restored]
  if not start_epoch:
    return 0, histories, None, [None] * layout.runs
  at_best, settle = [], []
  for r, (state, _) in enumerate(restored):
    best = selection.best(histories[r], group.configs[0].model_weights)
    if best is not None and best['epoch'] != start_epoch:
      state = _restore_epoch(ckpt[r], state, best['epoch'])
    at_best.append(state)
    # best checkpoints of epochs after e* (saved by the interrupted run) to settle
    later = best is not None and any(s > best['epoch'] for s in ckpt[r].steps('best'))
    settle.append(state if later else None)
  runs.load_runs(group, layout, [s for s, _ in restored])
  logging.info('Resuming %s from epoch %d.', ', '.join(workdirs), start_epoch)
  return (start_epoch, histories, _weights(runs.group_state(group, layout, at_best)),
          settle)


def _restore_epoch(ckpt, state, epoch):
  """The run's state at ``epoch`` from its 'best' checkpoint, else (absent or
  unreadable there) from its 'latest'."""
  why = []
  for which in ('best', 'latest'):
    if epoch in ckpt.steps(which):
      try:
        return ckpt.restore(which, state, epoch)[0]
      except UserError as e:
        why.append(str(e).split(';')[0])
  raise UserError(f'the weights of epoch {epoch}, the best by validation so far, are in '
                  f'no intact checkpoint under {ckpt.directory} (best {ckpt.steps("best")}, '
                  f'latest {ckpt.steps("latest")}{": " + ", ".join(why) if why else ""}); '
                  'this run cannot resume: start it again in a new --workdir')


def _weights(state) -> dict:
  """The arrays that make a model (no optimizer state)."""
  return {'params': state.params, 'batch_stats': state.batch_stats, 'ema': state.ema}


@jax.jit
def _keep(mask, new, old):
  """Per model: ``new`` where ``mask`` (shape () or (K,)) holds, else ``old``."""
  def pick(n, o):
    return jnp.where(mask.reshape(mask.shape + (1,) * (n.ndim - mask.ndim)), n, o)
  return jax.tree_util.tree_map(pick, new, old)


def _model_mask(run, run_flags):
  """The runs' flags per model of the group: (K,), or () for a lone model."""
  mask = runs.model_mask(run.layout, run_flags)
  return jnp.asarray(mask if run.group.stacked else mask[0])


def _epoch(run, epoch, on_epoch) -> bool:
  """Trains, evaluates and records one epoch of every live run; True when none is left."""
  group, lay = run.group, run.layout
  totals, seconds = _train_epoch(run.configs[0], epoch, group, run.feed, run.run_chunk,
                                 run.model_errors)
  eval_start = time.time()
  evals = [{} for _ in range(lay.runs)]
  for name, split in run.splits.items():
    for r, rec in enumerate(evaluation.evaluate_split(run.eval_fn, group.state, split, name,
                                                      lay.members)):
      evals[r].update(rec)
  times = (seconds, time.time() - eval_start)
  models = [_record(group, k, epoch, totals, times, run.feed.steps) for k in range(group.size)]
  errors = runs.run_errors(group, lay, run.model_errors)
  improved, stopped_now = [False] * lay.runs, [False] * lay.runs
  for r in range(lay.runs):
    if errors[r] is not None or r in run.stopped:
      continue
    record = {**runs.train_record(lay, r, models), **evals[r]}
    improved[r] = selection.improves(run.histories[r], record, run.model_weights)
    if _finish_epoch(run, r, record, improved[r], on_epoch):
      stopped_now[r] = True
      run.stopped[r] = runs.run_value(group, lay, r)
  now = _weights(group.state)
  if any(improved):
    run.best = _keep(_model_mask(run, improved), now, now if run.best is None else run.best)
  if any(stopped_now):
    run.frozen = _keep(_model_mask(run, stopped_now), now,
                       now if run.frozen is None else run.frozen)
  return all(e is not None or r in run.stopped for r, e in enumerate(errors))


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
                                  step_keys, group.dropout_rate, done, n)
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


def _record(group, k, epoch, totals, times, steps) -> dict:
  """Model k's training record (``times`` = its training and evaluation seconds)."""
  config, (seconds, eval_seconds) = group.configs[k], times
  return {'epoch': epoch,
          **{f'train_{name}': float(v[k] / steps) for name, v in totals.items()
             if name != 'grad_norm'},
          'train_time_s': seconds, 'eval_time_s': eval_seconds,
          'images_per_s': steps * config.batch_size / seconds}


def _finish_epoch(run, r, record, improved, on_epoch=None) -> bool:
  """Records run r's epoch: metrics, 'latest' and (if ``improved``: the new e* of
  engine/selection.py) 'best' checkpoints; returns whether ``on_epoch`` stops it."""
  config, epoch, history = run.configs[r], record['epoch'], run.histories[r]
  history.append(record)
  stop = bool(on_epoch is not None and on_epoch(r, record))
  every = config.checkpoint_every_epochs
  latest_due = epoch == config.num_epochs or (every and epoch % every == 0) or stop
  if latest_due or improved:
    state = runs.run_state(run.group, run.layout, r)
    meta = {'epoch': epoch, 'history': history}
    if latest_due:
      checkpoint.save(run.ckpt[r].get('latest'), epoch, state, meta)
    if improved:   # ranked by the rule's score (the model weights' val accuracy)
      run.ckpt[r].save_best(epoch, state, _best_meta(history, record, run.model_weights))
      run.resumed_best[r] = None
  if not improved and run.resumed_best[r] is not None:
    _settle_best(run, r, epoch, final=stop or epoch == config.num_epochs)
  run.writers[r].write_epoch(record)
  test = (f" | test loss {record['test_loss']:.4f} acc {record['test_accuracy']:.4f}"
          if 'test_accuracy' in record else '')
  logging.info('epoch %d/%d%s: train loss %.4f acc %.4f | val %s%s | %.0f img/s', epoch,
               config.num_epochs, runs.label(run.group, run.layout, r),
               record['train_loss'], record['train_accuracy'],
               f"{record.get('val_accuracy', float('nan')):.4f}", test,
               record['images_per_s'])
  return stop


def _best_meta(history, record, model_weights) -> dict:
  """The record saved with the best checkpoint of ``record``'s epoch."""
  return {'epoch': record['epoch'], 'history': history[:history.index(record) + 1],
          'val_accuracy': selection.score(record, model_weights),
          'selected_by': selection.key(model_weights)}


def _settle_best(run, r, epoch, final) -> None:
  """A resumed run whose e* is still the one it resumed with: best checkpoints the
  interrupted run saved of epochs this run has now replayed (or, at its end, of
  any later epoch) give way to e*'s state."""
  history = run.histories[r]
  best = selection.best(history, run.model_weights)
  stale = [s for s in run.ckpt[r].steps('best')
           if best is not None and s != best['epoch'] and (s <= epoch or final)]
  if stale:
    run.ckpt[r].save_best(best['epoch'], run.resumed_best[r],
                          _best_meta(history, best, run.model_weights))
    run.resumed_best[r] = None


def _test_at_end(run) -> tuple:
  """Per run (its last weights' test record, its e* weights' test record): the test
  split read once, raw and EMA weights in one pass each ({} without a test split).
  With config.eval_test_every_epoch the epochs' own records hold them."""
  lay, data = run.layout, run.data
  if not len(data.test_labels):
    return [{}] * lay.runs, [{}] * lay.runs
  if 'test' in run.splits:
    pick = lambda h: {k: v for k, v in (h or {}).items() if 'test_' in k}
    return ([pick(h[-1] if h else None) for h in run.histories],
            [pick(selection.best(h, run.model_weights) or (h[-1] if h else None))
             for h in run.histories])
  now = _weights(run.group.state)
  if run.frozen is not None:
    stopped = [r in run.stopped for r in range(lay.runs)]
    now = _keep(_model_mask(run, stopped), run.frozen, now)
  split = evaluation.padded_split(data.test_images, data.test_labels,
                                  run.configs[0].eval_batch_size, run.mesh)
  evaluate = lambda w: evaluation.evaluate_split(run.eval_fn, run.group.state.replace(**w),
                                                 split, 'test', lay.members)
  last = evaluate(now)
  best = last if run.best is None else evaluate(run.best)
  return last, best


def _outcomes(run, wall_s) -> list:
  """Each run's Outcome, its summary.json written (test read here, once)."""
  errors = runs.run_errors(run.group, run.layout, run.model_errors)
  test_last, test_best = _test_at_end(run)
  outcomes = []
  for r, (c, w) in enumerate(zip(run.configs, run.workdirs)):
    if errors[r] is not None:
      outcomes.append(Outcome(error=errors[r]))
      continue
    final = {**run.histories[r][-1], **test_last[r]}
    summary = summarize(c, run.histories[r], run.num_params, run.mesh, wall_s,
                        test_last=test_last[r], test_best=test_best[r])
    summary['train_images_in_process'] = len(run.data.train_labels)
    if run.layout.runs > 1:
      summary['vectorized_trials'] = run.layout.runs
    summary.update(runs.summary(run.group, run.layout, final))
    if r in run.stopped:
      summary['stopped_early'] = True
    writers.write_json_atomic(os.path.join(w, 'summary.json'), summary)
    value = run.stopped[r] if r in run.stopped else runs.run_value(run.group, run.layout, r)
    outcomes.append(Outcome(summary=summary, state=value))
  return outcomes


def summarize(config, history, num_params, mesh, wall_s, *, test_last=None,
              test_best=None) -> dict:
  """The contents of summary.json: the last epoch's validation and test metrics
  (raw weights; '_ema' the weight EMA), e* = selection.best and the model's
  (config.model_weights) figures there, the full record at e* under
  'at_best_val', speed and config. ``test_last``/``test_best``: the test
  records of the last and the e* weights (default: those in ``history``)."""
  weights = config.model_weights
  final = history[-1]
  best = selection.best(history, weights) or final
  test_last = {k: v for k, v in final.items() if k.startswith('test_')} \
      if test_last is None else test_last
  test_best = {k: v for k, v in best.items() if k.startswith('test_')} \
      if test_best is None else test_best
  tail = '_ema' if weights == 'ema' else ''
  own = lambda r: {k: v for k, v in r.items() if k.startswith(('val_', 'test_'))}
  rates = [h['images_per_s'] for h in history[1:]] or [final['images_per_s']]
  at_best = {'epoch': best['epoch'], **own(best), **own(test_best)}
  return {
      **own(final), **own(test_last),
      'model_weights': weights,
      'best_epoch': best['epoch'], 'best_val_accuracy': selection.score(best, weights),
      'test_accuracy_at_best_val': at_best.get(f'test_accuracy{tail}'),
      'test_loss_at_best_val': at_best.get(f'test_loss{tail}'),
      'at_best_val': at_best,
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
