"""A group of K ≥ 1 models that train together: K = 1 is a plain run; K > 1
are vectorized trials or an ensemble's members (engine/ensemble.py) as one program.

Trials k = 1..K that differ only in η_k (peak learning rate), β_k (momentum),
λ_k (weight decay), p_k (dropout rate) and their seed take each step together,

  (w_k, s_k), m_k = train_step((w_k, s_k), batch_k, rng_k)    for all k at once,

as ``jax.vmap(train.train_step)`` over the stacked parameters w, optimizer
states s and hyperparameters. Each trial computes what its sequential run
computes (same config, same seed), up to float rounding:

  η_k, β_k, λ_k  ``opt_state.hyperparams['learning_rate' | 'momentum' |
       'weight_decay']`` per trial: every optax chain injects them as arrays
       and computes η_k(t) = η_k · s(t) with the peak-1 schedule s (nn/optim.py);
  p_k  the model's ``dropout_rate`` call argument, an array under vmap
       (nn/dropout.py: y = m · x/(1 − p_k), m ~ Bernoulli(1 − p_k)), for models
       whose __call__ takes it (models.takes_dropout_rate); for others p is part
       of the group signature;
  seed_k  initial parameters and the rngs (dropout, augmentation, data order).

Trials with equal seeds (the usual sweep: one seed, many η) see the same
batches and draw the same augmentations and dropout uniforms, so the batch and
the step key enter vmap unbatched: the augmentation, the one-hot targets and
C1's input patches are computed once for all K trials, and C1 becomes one
matmul (B·H·W, 25) @ (25, K·6) (jax batches only what depends on the trial).

Speed: on XLA:CPU a vmapped nn.Conv whose input and kernel both carry the
trial axis becomes a grouped convolution (slower than K separate steps), so
every conv model runs with its convolutions as patches + matmul (models.vmapped:
vmapped into batched matmuls) on any backend.
K = 1 keeps the model's own state and step (no vmap: a single run costs what
a plain train_step does). For K > 1 the step counter is shared (the models step
together), so fold_in(rng, step) inside train_step stays unbatched. The one
epoch driver for every K is engine/driver.py.
experiments/speed/vectorized_speedup.py (training steps) and sweep_walltime.py (a
whole sweep) measure it.
"""
import dataclasses
import functools
import json
from typing import Any, List, Optional

import jax
import jax.numpy as jnp

from mnist_jax import models, train
from mnist_jax.nn import optim


def per_trial_keys(config) -> tuple:
  """The config keys that may differ between the trials of one group."""
  keys = ['seed', 'learning_rate', 'momentum']
  if config.weight_decay_mode == 'decoupled' or config.optimizer == 'adamw':
    keys.append('weight_decay')  # 'l2' weight decay is a static loss term
  if models.takes_dropout_rate(models.get_class(config.model.name)):
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


def _stacked_axes(state):
  """vmap axes of a stacked state: every array on axis 0 but the shared step."""
  return state.replace(step=None, params=0, batch_stats=0, opt_state=0, ema=0)


def _train_step_k(states, batch, rngs, dropout_rate):
  """``train.train_step`` for every model. ``batch`` is shared ((B, 28, 28, 1)
  images) or per model ((K, B, 28, 28, 1)); ``rngs`` one key shared by all
  models (equal seeds) or (K,) keys; ``dropout_rate`` p_k, shape (K,), given to
  each model's call, or None (each model's own p)."""

  def one(state, batch, rng, p):
    if p is None:
      return train.train_step(state, batch, rng)
    own = state.apply_fn
    state = state.replace(apply_fn=functools.partial(own, dropout_rate=p))
    state, metrics = train.train_step(state, batch, rng)
    return state.replace(apply_fn=own), metrics

  axes = _stacked_axes(states)
  shared_batch = None if batch['image'].ndim == 4 else 0
  shared_key = None if rngs.ndim == 0 else 0
  return jax.vmap(one, in_axes=(axes, shared_batch, shared_key, 0),
                  out_axes=(axes, 0))(states, batch, rngs, dropout_rate)


def _train_step_1(state, batch, rng, dropout_rate):
  """K = 1: the plain step (the model's own p), metrics given a model axis of length 1."""
  del dropout_rate
  state, metrics = train.train_step(state, batch, rng)
  return state, jax.tree_util.tree_map(lambda m: m[None], metrics)


def logits(state, images, stacked: bool):
  """(K, B, C) logits f(x; w_k) of every model on one shared batch of images: the
  plain model (K = 1, ``stacked`` False) or vmap over the stacked weights."""
  def one(s):
    return s.apply_fn(s.variables, s.inputs(images), train=False)

  if not stacked:
    return one(state)[None]
  return jax.vmap(one, in_axes=(_stacked_axes(state),))(state)


@dataclasses.dataclass
class Group:
  """K models that share a signature: their state and per-model pieces."""
  configs: list
  state: Any           # K = 1: the TrainState; K > 1: arrays stacked on axis 0
  dropout_rate: Optional[jax.Array]  # (K,) p_k for the models' calls; None: their own p
  train_rngs: list     # K keys: data order, dropout, augmentation
  templates: list      # each model's own TrainState (its form as a single run)

  @property
  def size(self) -> int:
    return len(self.configs)

  @property
  def shared_data(self) -> bool:
    """Equal seeds: one data order and one key per step, shared by all models."""
    return len({c.seed for c in self.configs}) == 1

  @property
  def train_step(self):
    """(state, batch, rng, dropout_rate) -> (state, metrics of shape (K,)); pure."""
    return _train_step_1 if self.size == 1 else _train_step_k

  @property
  def stacked(self) -> bool:
    """Whether ``state`` holds the models stacked on axis 0 (K > 1)."""
    return self.size > 1

  def member(self, k: int):
    """Model k as its single run's TrainState (for checkpoints, plots, predict)."""
    if self.size == 1:
      return self.state
    s = jax.tree_util.tree_map(lambda x: x[k], self.state.replace(step=None))
    return self.templates[k].replace(step=self.state.step, params=s.params,
                                     batch_stats=s.batch_stats, ema=s.ema,
                                     opt_state=s.opt_state)

  def stack_members(self, states):
    """The group's state made of single-run states (the group is unchanged)."""
    if self.size == 1:
      return states[0]
    return self.state.replace(
        step=states[0].step, params=_stack([s.params for s in states]),
        batch_stats=_stack([s.batch_stats for s in states]),
        ema=_stack([s.ema for s in states]),
        opt_state=_stack([s.opt_state for s in states]))

  def load_members(self, states) -> None:
    """Sets the group's state from single-run states (resuming)."""
    self.state = self.stack_members(states)


def _stack(trees):
  return jax.tree_util.tree_map(lambda *a: jnp.stack(a), *trees)


def create(configs, *, num_train=None, num_classes: int = 10) -> Group:
  """Initializes every model exactly as its single run would (key(seed) split
  into init / train keys); K > 1 are stacked under one model and optax chain."""
  configs = list(configs)
  if len(groups(configs)) != 1:
    raise ValueError('stacked.create needs configs with one signature; '
                     'split them with stacked.groups')
  ref = configs[0]
  steps = train.steps_per_epoch(ref, num_train)
  by_seed, templates, train_rngs = {}, [], []
  for c in configs:
    init_rng, train_rng = jax.random.split(jax.random.key(c.seed))
    if c.seed not in by_seed:  # model.init compiles: once per distinct seed
      by_seed[c.seed] = train.create_train_state(c, init_rng, num_train=num_train,
                                                 num_classes=num_classes)
      templates.append(by_seed[c.seed])
    else:  # same seed, same initial weights; this config's model and optimizer
      base, tx = by_seed[c.seed], optim.create_optimizer(c, steps)
      templates.append(base.replace(
          apply_fn=train.ModelApply(train.build_model(c, num_classes)), tx=tx,
          opt_state=tx.init(base.params)))
    train_rngs.append(train_rng)
  rates = [c.model.get('dropout_rate', 0.0) for c in configs]
  dropout_rate = None
  if len(configs) > 1 and 'model.dropout_rate' in per_trial_keys(ref) and any(rates):
    dropout_rate = jnp.asarray(rates, jnp.float32)
  if len(configs) == 1:
    return Group(configs, templates[0], dropout_rate, train_rngs, templates)
  # One chain for the group: its structure is the members' (equal signatures; the
  # largest λ keeps the decay step if any member decays); η_k, β_k, λ_k are read
  # from each member's optimizer state, not from the chain.
  group_config = ref.copy_and_resolve_references()
  with group_config.unlocked():
    group_config.weight_decay = max(c.weight_decay for c in configs)
  tx = optim.create_optimizer(group_config, steps)
  model = models.vmapped(templates[0].model)

  state = templates[0].replace(
      params=_stack([t.params for t in templates]),
      batch_stats=_stack([t.batch_stats for t in templates]),
      ema=_stack([t.ema for t in templates]),
      opt_state=_stack([t.opt_state for t in templates]),  # each holds its η, β, λ
      apply_fn=train.ModelApply(model), tx=tx)
  return Group(configs, state, dropout_rate, train_rngs, templates)
