"""The epoch loop of a group of vectorized trials (vectorized.py), as loop.py runs one.

Every epoch e, for the K trials of a group at once:

  π_k = permutation(fold_in(train_key_k, e))   (one π, shared, when seeds are equal)
  for t = 1 .. ⌊N / B⌋:  (w_k, s_k), m_k = train_step((w_k, s_k), batch_t(π_k), key_k,t)
  val / test accuracy of every w_k; per trial: metrics.jsonl, checkpoints, summary.json

in one jit(lax.scan(vmap(train_step))) per chunk of steps. A trial whose loss
becomes non-finite stops alone (its UserError is returned); the others go on.
"""
import functools
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from mnist_jax import checkpoint, loop, parallel, train, validate, vectorized, writers
from mnist_jax.data import pipeline, preprocess
from mnist_jax.errors import UserError


def chunk_fn(standardize: bool, shared: bool):
  """jit(scan(train_step)) over a block of batch indices and the step keys:
  (k, B) indices and one key (shared), or (K, k, B) and (K,) keys."""

  def run(states, images, labels, idx, step_rngs, first_step, keep):
    idx = idx if shared else jnp.swapaxes(idx, 0, 1)  # scan over steps

    def body(states, inputs):
      i, batch_idx = inputs
      batch = {'image': preprocess.normalize(images[batch_idx], standardize=standardize),
               'label': labels[batch_idx]}
      rngs = (jax.random.fold_in(step_rngs, first_step + i) if shared else
              jax.vmap(jax.random.fold_in, (0, None))(step_rngs, first_step + i))
      return vectorized.train_step(states, batch, rngs, keep)

    states, metrics = jax.lax.scan(body, states, (jnp.arange(idx.shape[0]), idx))
    return states, jax.tree_util.tree_map(lambda m: jnp.sum(m, 0), metrics)

  return jax.jit(run)


def eval_fn(standardize: bool, batch_size: int):
  """Per-trial {'loss', 'correct', 'count'} sums over a padded split."""

  @jax.jit
  def run(states, images, labels, mask):
    shape = lambda a: a.reshape((-1, batch_size) + a.shape[1:])

    def body(totals, batch):
      batch['image'] = preprocess.normalize(batch['image'], standardize=standardize)
      return jax.tree_util.tree_map(jnp.add, totals, vectorized.eval_step(states, batch)), None

    k = states.step.shape[0]
    zeros = {n: jnp.zeros((k,), jnp.float32) for n in ('loss', 'correct', 'count')}
    batches = {'image': shape(images), 'label': shape(labels), 'mask': shape(mask)}
    return jax.lax.scan(body, zeros, batches)[0]

  return run


def train_and_evaluate(configs, workdirs) -> list:
  """Trains one group of trials together; trial k writes ``workdirs[k]`` as
  ``loop.train_and_evaluate`` would (config.json, metrics.jsonl, tensorboard/,
  checkpoints/latest|best, summary.json; no plots) and resumes from there when
  all trials hold checkpoints of the same epoch. Returns per trial its summary,
  or the UserError that stopped it (a non-finite loss stops only that trial)."""
  start, ref, n = time.time(), configs[0], len(configs)
  if jax.process_count() > 1:
    raise UserError('vectorized trials run in one process; drop --vectorize for a '
                    'multi-host sweep (or run it on one host)')
  for c, w in zip(configs, workdirs):
    validate.check(c, 1)
    loop.prepare_workdir(w)
  data = pipeline.load(ref.data)
  num_train = len(data.train_labels)
  group = vectorized.create(configs, num_train=num_train, num_classes=data.num_classes)
  ckpt = [(checkpoint.manager(os.path.join(w, 'checkpoints', 'latest'), c.keep_checkpoints),
           checkpoint.manager(os.path.join(w, 'checkpoints', 'best'), 1, best=True))
          for c, w in zip(configs, workdirs)]
  restored = [checkpoint.restore(latest, group.trial_state(k))
              for k, (latest, _) in enumerate(ckpt)]
  epochs = {meta['epoch'] if meta else 0 for _, meta in restored}
  if len(epochs) > 1:
    raise UserError(f'trials {", ".join(workdirs)} hold checkpoints of different epochs '
                    f'{sorted(epochs)}; run them without --vectorize to resume each')
  start_epoch = epochs.pop()
  if start_epoch:
    group.load_trial_states([s for s, _ in restored])
  histories = [meta['history'] if meta else [] for _, meta in restored]
  metric_writers = []
  for c, w in zip(configs, workdirs):
    loop.record_config(c, w, resuming=start_epoch > 0)
    metric_writers.append(writers.MetricWriter(w, json.loads(c.to_json_best_effort())))
    metric_writers[-1].truncate_after(start_epoch)
  mesh = parallel.make_mesh(1)
  images, labels = parallel.replicate((data.train_images, data.train_labels), mesh)
  splits = {'val': (data.val_images, data.val_labels), 'test': (data.test_images, data.test_labels)}
  splits = {name: loop.padded_split(x, y, ref.eval_batch_size, mesh)
            for name, (x, y) in splits.items() if len(y)}
  run_chunk = chunk_fn(ref.data.standardize, group.shared_data)
  run_eval = eval_fn(ref.data.standardize, ref.eval_batch_size)
  steps, batch = train.steps_per_epoch(ref, num_train), ref.batch_size
  permute = jax.jit(jax.vmap(functools.partial(
      loop.batch_order, num_train=num_train, steps=steps, batch_size=batch)))
  errors = [None] * n
  try:
    for epoch in range(start_epoch + 1, ref.num_epochs + 1):
      keys = jax.vmap(lambda r: jax.random.split(jax.random.fold_in(r, epoch)))(
          group.train_rngs)                       # loop's (perm_rng, step_rng) per trial
      idx = permute(keys[:1, 0] if group.shared_data else keys[:, 0])
      step_keys = keys[0, 1] if group.shared_data else keys[:, 1]
      t0, done, totals = time.time(), 0, None
      for k in loop._chunks(steps, ref.log_every_steps):  # pylint: disable=protected-access
        block = idx[0, done:done + k] if group.shared_data else idx[:, done:done + k]
        group.states, sums = run_chunk(group.states, images, labels, block, step_keys,
                                       done, group.keep)
        sums = jax.device_get(sums)
        totals = sums if totals is None else jax.tree_util.tree_map(np.add, totals, sums)
        done += k
      seconds = time.time() - t0
      evals = {name: jax.device_get(run_eval(group.states, *split))
               for name, split in splits.items()}
      for t in range(n):
        if errors[t] is None:
          errors[t] = _finish_epoch(group, t, epoch, totals, evals, seconds, steps,
                                    histories[t], ckpt[t], metric_writers[t])
      if all(errors):
        break
  finally:
    for latest, best in ckpt:
      latest.wait_until_finished()
      best.wait_until_finished()
    for w in metric_writers:
      w.close()
  results = []
  for t, (c, w) in enumerate(zip(configs, workdirs)):
    if errors[t] is not None:
      results.append(errors[t])
      continue
    num_params = sum(int(np.prod(p.shape)) for p in jax.tree_util.tree_leaves(
        group.templates[t].params))
    summary = loop._summary(c, histories[t], num_params, mesh,  # pylint: disable=protected-access
                            time.time() - start)
    summary['vectorized_trials'] = n
    writers.write_json_atomic(os.path.join(w, 'summary.json'), summary)
    results.append(summary)
  return results


def _finish_epoch(group, t, epoch, totals, evals, seconds, steps, history, ckpt, writer):
  """Records trial t's epoch (metrics, checkpoints); its UserError if it diverged."""
  config = group.configs[t]
  loss = float(totals['loss'][t] / steps)
  if not np.isfinite(loss):
    return UserError(f'training loss became {loss} in epoch {epoch}; lower '
                     f'config.learning_rate (now {config.learning_rate}) or set '
                     'config.grad_clip_norm=1.0 — the last good checkpoint is kept')
  record = {'epoch': epoch, 'train_loss': loss,
            'train_accuracy': float(totals['accuracy'][t] / steps),
            'train_time_s': seconds, 'images_per_s': steps * config.batch_size / seconds}
  for name, sums in evals.items():
    record[f'{name}_loss'] = float(sums['loss'][t] / sums['count'][t])
    record[f'{name}_accuracy'] = float(sums['correct'][t] / sums['count'][t])
  history.append(record)
  every = config.checkpoint_every_epochs
  if epoch == config.num_epochs or (every and epoch % every == 0):
    state, meta = group.trial_state(t), {'epoch': epoch, 'history': history}
    checkpoint.save(ckpt[0], epoch, state, meta)
    if 'val_accuracy' in record:
      checkpoint.save(ckpt[1], epoch, state, {**meta, 'val_accuracy': record['val_accuracy']})
  writer.write_epoch(record)
  return None
