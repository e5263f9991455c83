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
The epoch loop of a group is vectorized_loop.py.
experiments/vectorized_speedup.py (training steps) and sweep_walltime.py (a
whole sweep) measure it; vectorized_profile.py shows why the gain on a 2-core
CPU is what the trials share, not the per-trial compute.
"""
import dataclasses
import json
from typing import Any, List

import jax
import jax.numpy as jnp
import optax
from flax import linen as nn

from mnist_jax import models, optim, train

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
