"""The trainer: one model from its config to its outputs, read top to bottom.

  data     pipeline.load(config.data); what it is (μ, σ, K, N) goes into the
           config, and so into config.json (data/describe.py)
  state    train.create_train_state(config, k_init), (k_init, k_train) = split(key(seed))
  resume   a workdir with checkpoints continues from 'latest'; everything that can
           refuse is checked before a file changes (store/workdir.py)
  epoch e  train: ⌊N/B⌋ steps of train.train_step (engine/epoch.py)
           validate: one evaluation pass (engine/evaluation.py) of the raw and EMA weights
           record: metrics.jsonl, TensorBoard, 'latest' and, when e* moves, 'best'
  test     the test split once, at the end, for the last weights and for those
           of e* (store/selection.py: the best epoch by validation)
  summary  summary.json (engine/summary.py)

A run whose loss becomes non-finite stops with one line (its last good
checkpoint kept). ``on_epoch(record) -> stop``, if given, sees each epoch's
record (a search's pruner); True ends the run there, with its 'latest'
checkpoint and summary.json (``stopped_early``) written at that epoch.
config.eval_test_every_epoch adds the test split to every epoch's record (test
curves; reading test every epoch invites choosing on it, so nothing here does).
K models that train as one vmapped program (ensembles, vectorized trials) are
engine/stacked.py, built from this module's pieces.
"""
import dataclasses
import time
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from mnist_jax import parallel, train
from mnist_jax.config import validate
from mnist_jax.data import describe, pipeline
from mnist_jax.engine import (ensemble, epoch as epoch_lib, evaluation, memory,
                              summary as summary_lib)
from mnist_jax.store import selection, workdir as workdir_lib, writers
from mnist_jax.errors import UserError


@dataclasses.dataclass
class Outcome:
  """What training a run gave: summary.json's contents, the final model, the data;
  or the error that stopped it (one of K models, engine/stacked.py)."""
  summary: Optional[dict]
  state: Any             # the TrainState (an ensemble run: its ensemble.Ensemble)
  data: pipeline.Dataset
  error: Optional[UserError] = None


def train_and_evaluate(config, workdir: str, *, on_epoch=None) -> Outcome:
  """Trains ``config`` in ``workdir`` (resuming if it holds checkpoints)."""
  if ensemble.size(config) > 1:
    raise UserError('an ensemble (config.ensemble.size > 1) trains as K models: '
                    'call engine.stacked.train([config], [workdir])')
  start = time.time()
  (config,), data, mesh = load([config])
  set_up = time.time()
  workdir_lib.prepare(workdir)
  with workdir_lib.lock(workdir):
    feed, data = epoch_lib.feed(config, data, mesh)
    init_key, train_key = epoch_lib.run_keys(config.seed)
    state = train.create_train_state(config, init_key, num_train=feed.num_train,
                                     num_classes=data.num_classes)
    run = workdir_lib.RunFiles.open(config, workdir)   # reads only
    state, resumed_best = run.resume(state)
    best = weights(resumed_best) if resumed_best is not None else None   # e*'s weights
    run.begin()                                          # decided: files change from here
    state = parallel.replicate(state, mesh)
    splits = every_epoch_splits(config, data, mesh)
    options = train.compiler_options(config)
    eval_fn = evaluation.pass_fn(mesh, compiler_options=options)
    run_chunk = epoch_lib.chunk_fn(train.train_step, mesh, gather=feed.gather,
                                   mode=config.loop_mode, compiler_options=options)
    log_start(config, data, feed, mesh, state, 1, run, time.time() - set_up)
    stop = False
    try:
      for epoch in range(run.epoch + 1, config.num_epochs + 1):
        idx, step_key = epoch_lib.epoch_order(feed, train_key, epoch)
        state, train_metrics, seconds, finite = epoch_lib.train(
            run_chunk, state, feed, idx, step_key, epoch=epoch,
            every=config.log_every_steps, batch_size=config.batch_size)
        if not finite:
          raise UserError(epoch_lib.nonfinite_error(config, epoch, train_metrics['loss']))
        eval_start = time.time()
        evals = evaluation.evaluate(eval_fn, state, splits)
        tree = {'train': {'raw': train_metrics},
                **{split: e['model'] for split, e in evals.items()}}
        record = epoch_record(epoch, writers.flatten(tree), seconds, time.time() - eval_start,
                              feed.steps * config.batch_size)
        improved = selection.improves(run.history, record, config.model_weights)
        if improved:
          best = snapshot(weights(state))
        stop = bool(on_epoch is not None and on_epoch(record))
        run.record(record, state, improved=improved, stop=stop)
        if stop:
          break
    finally:
      run.close()
    last = at_best = None       # None: the history's own test metrics, if any
    test = test_split(config, data, mesh)
    if test:
      read = lambda w: writers.flatten(
          {'test': evaluation.evaluate(eval_fn, state.replace(**w), test)['test']['model']})
      last = read(weights(state))
      at_best = last if best is None else read(best)
    summary = summary_lib.summarize(config, run.history, num_params(state), mesh,
                                    time.time() - start, test_last=last, test_best=at_best)
    summary['train_images_in_process'] = len(data.train_labels)
    if stop:
      summary['stopped_early'] = True
    run.write_summary(summary)
  return Outcome(summary, state, data)


def load(configs) -> tuple:
  """(configs, data, mesh): the configs checked, the data read once (before any
  file is written: a failure leaves nothing) and recorded in each config."""
  mesh = parallel.make_mesh(configs[0].num_devices)
  for c in configs:
    validate.check(c, mesh.devices.size)
  data_start = time.time()
  data = pipeline.load(configs[0].data)
  configs = [describe.resolve(c, data) for c in configs]   # μ, σ, K, names, N
  logging.info('Data: %d train / %d val / %d test images read in %.2f s.',
               len(data.train_labels), len(data.val_labels), len(data.test_labels),
               time.time() - data_start)
  if len(data.train_labels) < configs[0].batch_size:
    raise UserError(f'batch_size {configs[0].batch_size} exceeds the '
                    f'{len(data.train_labels)} training images; lower config.batch_size')
  memory.check_memory(configs[0], data.num_classes)
  return configs, data, mesh


def every_epoch_splits(config, data, mesh) -> dict:
  """{name: padded split} evaluated every epoch: 'val' (and 'test' with
  config.eval_test_every_epoch), where the split has images."""
  named = [('val', data.val_images, data.val_labels)] + (
      [('test', data.test_images, data.test_labels)] if config.eval_test_every_epoch else [])
  return {name: evaluation.padded_split(x, y, config.eval_batch_size, mesh)
          for name, x, y in named if len(y)}


def test_split(config, data, mesh) -> dict:
  """{'test': padded split} for the one reading at the end ({} when it is read every
  epoch or empty)."""
  if config.eval_test_every_epoch or not len(data.test_labels):
    return {}
  return {'test': evaluation.padded_split(data.test_images, data.test_labels,
                                          config.eval_batch_size, mesh)}


def epoch_record(epoch: int, flat: dict, seconds: float, eval_seconds: float,
                 images: int) -> dict:
  """An epoch's record: its metrics (``flat``: writers.flatten's keys), its times
  and the training speed."""
  return {'epoch': epoch, **flat, 'train_time_s': seconds, 'eval_time_s': eval_seconds,
          'images_per_s': images / seconds}


def weights(state) -> dict:
  """The arrays that make a model (no optimizer state)."""
  return {'params': state.params, 'batch_stats': state.batch_stats, 'ema': state.ema}


@jax.jit
def snapshot(tree):
  """A copy of ``tree``'s arrays, as one program (not one per leaf): off the CPU the
  steps donate the state's buffers, so a reference kept past the next step would
  point at freed memory."""
  return jax.tree_util.tree_map(jnp.copy, tree)


def num_params(state) -> int:
  return sum(int(np.prod(p.shape)) for p in jax.tree_util.tree_leaves(state.params))


def log_start(config, data, feed, mesh, state, k: int, run, set_up_s: float) -> None:
  """The line a run starts training with; ``set_up_s``: the seconds from the data read
  to here (model, optimizer, resume, evaluation splits)."""
  if run.epoch:
    logging.info('Resuming %s from epoch %d.', run.workdir, run.epoch)
  logging.info('Training %d x %s (%d params) on %d %s device(s): %d train / %d val / %d '
               'test images, %d steps of %d per epoch (set up in %.2f s).', k,
               config.model.name, num_params(state) // k, mesh.devices.size,
               jax.default_backend(), feed.num_train, len(data.val_labels),
               len(data.test_labels), feed.steps, config.batch_size, set_up_s)
