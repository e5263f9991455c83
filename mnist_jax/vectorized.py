"""Vectorized trials: K hyperparameter settings of one architecture as one program.

Trials k = 1..K that differ only in η_k (peak learning rate), β_k (momentum),
λ_k (weight decay), p_k (dropout rate) and their seed take each step together,

  (w_k, s_k), m_k = train_step((w_k, s_k), batch_k, rng_k)    for all k at once,

as ``jax.vmap(train.train_step)`` over the stacked parameters w, optimizer
states s and hyperparameters. Each trial computes what its sequential run
computes (same config, same seed), up to float rounding:

  η_k  every schedule is linear in its peak, η_k(t) = η_k · s(t): the group's
       optax chain is built with peak 1, then scaled by η_k (a per-trial
       ``optax.inject_hyperparams(optax.scale)`` hyperparameter);
  β_k, λ_k  ``opt_state.hyperparams['momentum' | 'weight_decay']`` per trial;
  p_k  flax's nn.Dropout has a static rate, so an ``nn.intercept_methods``
       interceptor applies its rule (mask ~ Bernoulli(1 − p), y = mask · x/(1 − p),
       with the layer's own make_rng key) with a traced p_k — models in
       TRACED_DROPOUT_MODELS; for others p is part of the group signature;
  seed_k  initial parameters and the rngs (dropout, augmentation, data order).

Trials with equal seeds (the usual sweep: one seed, many η) see the same
batches and draw the same augmentations and dropout uniforms, so the batch and
the step key enter vmap unbatched: the augmentation, the one-hot targets and
C1's input patches are computed once for all K trials, and C1 becomes one
matmul (B·H·W, 25) @ (25, K·6) (jax batches only what depends on the trial).

Speed: on XLA:CPU a vmapped nn.Conv whose input and kernel both carry the
trial axis becomes a grouped convolution (slower than K separate steps), so
every conv model (all take ``conv_impl``) runs with conv_impl='patches'
(nn/conv.py: im2col + matmul, vmapped into batched matmuls) on any backend.
experiments/vectorized_speedup.py (training steps) and sweep_walltime.py (a
whole sweep) measure it; vectorized_profile.py shows why the gain on a 2-core
CPU is what the trials share, not the per-trial compute.
"""
import dataclasses
import json
import os
import time
from typing import Any, List

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn

from mnist_jax import checkpoint, loop, models, optim, parallel, train, validate, writers
from mnist_jax.data import pipeline, preprocess
from mnist_jax.errors import UserError

TRACED_DROPOUT_MODELS = ('lenet5', 'cnn', 'mlp')  # nn.Dropout(config.model.dropout_rate)
_SENTINEL_RATE = 0.123456789  # marks the Dropout layers whose rate is per trial


def per_trial_keys(config) -> tuple:
  """The config keys that may differ between the trials of one group."""
  keys = ['seed', 'learning_rate', 'momentum']
  if config.weight_decay_mode == 'decoupled' or config.optimizer == 'adamw':
    keys.append('weight_decay')  # 'l2' weight decay is a static loss term
  if config.model.name in TRACED_DROPOUT_MODELS:
    keys.append('model.dropout_rate')
  return tuple(keys)


def signature(config) -> str:
  """Trials with equal signatures can train together (equal up to per_trial_keys)."""
  flat = json.loads(config.to_json_best_effort())
  for key in per_trial_keys(config):
    *parents, leaf = key.split('.')
    node = flat
    for p in parents:
      node = node[p]
    node.pop(leaf, None)
  flat['decoupled_decay_on'] = config.weight_decay > 0  # changes the optax chain
  return json.dumps(flat, sort_keys=True, default=str)


def groups(configs) -> List[List[int]]:
  """Indices of ``configs`` grouped by signature, in first-seen order."""
  out = {}
  for i, c in enumerate(configs):
    out.setdefault(signature(c), []).append(i)
  return list(out.values())


def _dropout_interceptor(keep):
  """Replaces nn.Dropout(rate=_SENTINEL_RATE) by the same rule with keep = 1 − p traced."""

  def interceptor(next_fun, args, kwargs, context):
    module = context.module
    if not (isinstance(module, nn.Dropout) and context.method_name == '__call__'
            and module.rate == _SENTINEL_RATE):
      return next_fun(*args, **kwargs)
    inputs = args[0]
    deterministic = kwargs.get('deterministic', args[1] if len(args) > 1 else None)
    deterministic = nn.merge_param('deterministic', module.deterministic, deterministic)
    if deterministic:
      return inputs
    shape = [1 if d in module.broadcast_dims else s for d, s in enumerate(inputs.shape)]
    mask = jax.random.bernoulli(module.make_rng(module.rng_collection), keep, shape)
    mask = jnp.broadcast_to(mask, inputs.shape)
    return jax.lax.select(mask, inputs / keep.astype(inputs.dtype), jnp.zeros_like(inputs))

  return interceptor


def train_step(states, batch, rngs, keep):
  """``train.train_step`` for every trial. ``batch`` is shared ((B, 28, 28, 1)
  images) or per trial ((K, B, 28, 28, 1)); ``rngs`` one key shared by all
  trials (equal seeds) or (K,) keys; ``keep`` = 1 − p_k, shape (K,)."""

  def one(state, batch, rng, keep):
    with nn.intercept_methods(_dropout_interceptor(keep)):
      return train.train_step(state, batch, rng)

  shared_batch = None if batch['image'].ndim == 4 else 0
  shared_key = None if rngs.ndim == 0 else 0
  return jax.vmap(one, in_axes=(0, shared_batch, shared_key, 0))(states, batch, rngs, keep)


def eval_step(states, batch):
  """``train.eval_step`` sums for every trial on a shared batch."""
  return jax.vmap(train.eval_step, in_axes=(0, None))(states, batch)


@dataclasses.dataclass
class Group:
  """K trials that share a signature: the stacked state and per-trial pieces."""
  configs: list
  states: Any          # train.TrainState, arrays with a leading trial axis
  keep: jax.Array      # (K,) dropout keep probabilities 1 − p_k
  train_rngs: jax.Array  # (K,) keys: data order, dropout, augmentation
  templates: list      # each trial's own TrainState (sequential form)

  @property
  def shared_data(self) -> bool:
    """Equal seeds: one data order and one key per step, shared by all trials."""
    return len({c.seed for c in self.configs}) == 1

  def trial_state(self, k: int):
    """Trial k as its sequential run's TrainState (for checkpoints / predict)."""
    s = jax.tree_util.tree_map(lambda x: x[k], self.states)
    inner, scale = s.opt_state
    hp = dict(inner.hyperparams)
    hp['learning_rate'] = hp['learning_rate'] * scale.hyperparams['step_size']
    return self.templates[k].replace(step=s.step, params=s.params,
                                     batch_stats=s.batch_stats,
                                     opt_state=inner._replace(hyperparams=hp))

  def load_trial_states(self, trial_states) -> None:
    """Sets the stacked state from sequential-form states (resuming)."""
    inner = [s.opt_state for s in trial_states]
    stacked = lambda xs: jax.tree_util.tree_map(lambda *a: jnp.stack(a), *xs)
    _, scale = self.states.opt_state
    self.states = self.states.replace(
        step=stacked([s.step for s in trial_states]),
        params=stacked([s.params for s in trial_states]),
        batch_stats=stacked([s.batch_stats for s in trial_states]),
        opt_state=(stacked(inner), scale))


def create(configs, *, num_train=None, num_classes: int = 10) -> Group:
  """Initializes every trial exactly as ``loop`` would (key(seed) split into
  init / train keys) and stacks them under one group model and optax chain."""
  configs = list(configs)
  if len(groups(configs)) != 1:
    raise ValueError('vectorized.create needs configs with one signature; '
                     'split them with vectorized.groups')
  ref = configs[0]
  steps = train.steps_per_epoch(ref, num_train)
  by_seed, templates, train_rngs = {}, [], []
  for c in configs:
    init_rng, train_rng = jax.random.split(jax.random.key(c.seed))
    if c.seed not in by_seed:  # model.init compiles: once per distinct seed
      by_seed[c.seed] = train.create_train_state(c, init_rng, num_train=num_train,
                                                 num_classes=num_classes)
    base = by_seed[c.seed]
    tx = optim.create_optimizer(c, steps)
    templates.append(base.replace(model=train.build_model(c, num_classes), tx=tx,
                                  opt_state=tx.init(base.params)))
    train_rngs.append(train_rng)
  group_config = ref.copy_and_resolve_references()
  with group_config.unlocked():
    group_config.learning_rate = 1.0
    group_config.weight_decay = max(c.weight_decay for c in configs)
  inner_tx = optim.create_optimizer(group_config, steps)
  tx = optax.chain(inner_tx, optax.inject_hyperparams(optax.scale)(step_size=1.0))
  model = templates[0].model
  if 'conv_impl' in models.fields(type(model)):
    model = model.clone(conv_impl='patches')
  if 'model.dropout_rate' in per_trial_keys(ref) and any(
      c.model.get('dropout_rate', 0.0) > 0 for c in configs):
    model = model.clone(dropout_rate=_SENTINEL_RATE)

  def opt_state(c, params):
    inner, scale = tx.init(params)
    hp = {**inner.hyperparams, 'momentum': jnp.float32(c.momentum),
          'weight_decay': jnp.float32(c.weight_decay)}
    scale = scale._replace(hyperparams={'step_size': jnp.float32(c.learning_rate)})
    return inner._replace(hyperparams=hp), scale

  stacked = lambda xs: jax.tree_util.tree_map(lambda *a: jnp.stack(a), *xs)
  states = templates[0].replace(
      step=stacked([t.step for t in templates]),
      params=stacked([t.params for t in templates]),
      batch_stats=stacked([t.batch_stats for t in templates]),
      opt_state=stacked([opt_state(c, t.params) for c, t in zip(configs, templates)]),
      model=model, tx=tx)
  keep = jnp.asarray([1.0 - c.model.get('dropout_rate', 0.0) for c in configs],
                     jnp.float32)
  return Group(configs, states, keep, jnp.stack(train_rngs), templates)


def _chunk_fn(standardize: bool, shared: bool):
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
      return train_step(states, batch, rngs, keep)

    states, metrics = jax.lax.scan(body, states, (jnp.arange(idx.shape[0]), idx))
    return states, jax.tree_util.tree_map(lambda m: jnp.sum(m, 0), metrics)

  return jax.jit(run)


def _eval_fn(standardize: bool, batch_size: int):
  """Per-trial {'loss', 'correct', 'count'} sums over a padded split."""

  @jax.jit
  def run(states, images, labels, mask):
    shape = lambda a: a.reshape((-1, batch_size) + a.shape[1:])

    def body(totals, batch):
      batch['image'] = preprocess.normalize(batch['image'], standardize=standardize)
      return jax.tree_util.tree_map(jnp.add, totals, eval_step(states, batch)), None

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
  group = create(configs, num_train=num_train, num_classes=data.num_classes)
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
  chunk_fn = _chunk_fn(ref.data.standardize, group.shared_data)
  eval_fn = _eval_fn(ref.data.standardize, ref.eval_batch_size)
  steps, batch = train.steps_per_epoch(ref, num_train), ref.batch_size
  permute = jax.jit(jax.vmap(lambda key: jax.random.permutation(key, num_train)[
      :steps * batch].reshape(steps, batch)))
  errors = [None] * n
  try:
    for epoch in range(start_epoch + 1, ref.num_epochs + 1):
      keys = jax.vmap(lambda r: jax.random.split(jax.random.fold_in(r, epoch)))(
          group.train_rngs)                       # loop's (perm_rng, step_rng) per trial
      idx = permute(keys[:1, 0] if group.shared_data else keys[:, 0])
      t0, done, totals = time.time(), 0, None
      for k in loop._chunks(steps, ref.log_every_steps):  # pylint: disable=protected-access
        block = idx[0, done:done + k] if group.shared_data else idx[:, done:done + k]
        step_keys = keys[0, 1] if group.shared_data else keys[:, 1]
        group.states, sums = chunk_fn(group.states, images, labels, block, step_keys,
                                      done, group.keep)
        sums = jax.device_get(sums)
        totals = sums if totals is None else jax.tree_util.tree_map(np.add, totals, sums)
        done += k
      seconds = time.time() - t0
      evals = {name: jax.device_get(eval_fn(group.states, *split))
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
