"""The train state and the pure train/eval steps — the public research API.

One step of mini-batch gradient descent on a batch {x_i, y_i}, i = 1..B:
  L(w) = (1/B) Σ_i ℓ(f(x_i; w), onehot(y_i))  [+ λ‖w‖² if weight_decay_mode='l2']
  g = ∇_w L (backpropagation: the chain rule, output layer back to the input),
  w ← optimizer(w, g)  (optim.py).
Under ``axis_name`` (pmap / shard_map) each device holds B/D examples and
g, the batch-norm statistics and the metrics are averaged with lax.pmean, so
D devices compute the same update as one device on the whole batch.

No I/O here: research code can import this module and jit/pmap/vmap the steps.

  state = create_train_state(config, jax.random.key(0))
  state, metrics = jax.jit(train_step)(state, batch, rng)
  p_step = jax.pmap(functools.partial(train_step, axis_name='batch'), axis_name='batch')
"""
import functools
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import optax
from flax import linen as nn
from flax import struct

from mnist_jax import models, optim
from mnist_jax.data import augment, preprocess
from mnist_jax.errors import UserError
from mnist_jax.nn import losses

DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}
MNIST_TRAIN_IMAGES = 60000


class TrainState(struct.PyTreeNode):
  """Everything a step reads and writes. Arrays are pytree leaves; the model,
  optimizer, loss and augmentation are static (they define the computation)."""
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  model: nn.Module = struct.field(pytree_node=False)
  tx: optax.GradientTransformation = struct.field(pytree_node=False)
  loss_fn: Callable = struct.field(pytree_node=False)
  l2_weight: float = struct.field(pytree_node=False, default=0.0)
  augment_fn: Optional[Callable] = struct.field(pytree_node=False, default=None)
  num_classes: int = struct.field(pytree_node=False, default=10)

  @property
  def variables(self):
    """The flax variables {'params', 'batch_stats'?} for ``model.apply``."""
    if self.batch_stats:
      return {'params': self.params, 'batch_stats': self.batch_stats}
    return {'params': self.params}


def steps_per_epoch(config, num_train: Optional[int] = None) -> int:
  """⌊N_train / B⌋: full batches per epoch (the remainder is reshuffled next epoch)."""
  if num_train is None:
    num_train = config.data.train_limit or MNIST_TRAIN_IMAGES - config.data.val_size
  return max(1, num_train // config.batch_size)


def build_model(config, num_classes: int = 10) -> nn.Module:
  """The model of ``config.model`` with the config's compute dtype."""
  overrides = {'num_classes': num_classes}
  if config.compute_dtype not in DTYPES:
    raise UserError(f"unknown compute_dtype '{config.compute_dtype}'; use one of "
                    f"{', '.join(DTYPES)}")
  cls = models.get_class(config.model.name)
  if 'dtype' in models.fields(cls):
    overrides['dtype'] = DTYPES[config.compute_dtype]
  elif config.compute_dtype != 'float32':
    raise UserError(f"model '{config.model.name}' has no dtype option; "
                    "set config.compute_dtype='float32'")
  return models.build(config.model, **overrides)


def create_train_state(config, rng, *, num_train: Optional[int] = None,
                       num_classes: int = 10, input_shape=(1, 28, 28, 1)) -> TrainState:
  """Initializes the model (flax ``init``) and the optax chain from ``config``."""
  model = build_model(config, num_classes)
  variables = jax.jit(functools.partial(model.init, train=False))(
      {'params': rng, 'dropout': rng}, jnp.zeros(input_shape, jnp.float32))
  params = variables['params']
  tx = optim.create_optimizer(config, steps_per_epoch(config, num_train))
  aug = dict(config.augment)
  l2 = config.weight_decay if config.weight_decay_mode == 'l2' else 0.0
  if config.weight_decay_mode not in ('l2', 'decoupled'):
    raise UserError(f"unknown weight_decay_mode '{config.weight_decay_mode}'; "
                    "use 'l2' or 'decoupled'")
  return TrainState(
      step=jnp.zeros((), jnp.int32), params=params,
      batch_stats=variables.get('batch_stats', {}), opt_state=tx.init(params),
      model=model, tx=tx, loss_fn=losses.get(config.loss),
      l2_weight=0.0 if config.optimizer == 'adamw' else l2,
      augment_fn=(functools.partial(augment.augment, cfg=aug)
                  if augment.is_enabled(aug) else None),
      num_classes=num_classes)


def _model_for(state, axis_name):
  """The model with batch norm reducing over ``axis_name`` (if it has BN)."""
  if axis_name is not None and 'axis_name' in models.fields(type(state.model)):
    return state.model.clone(axis_name=axis_name)
  return state.model


def l2_penalty(params):
  """‖w‖² = Σ w² over the kernels (biases and BN scales excluded)."""
  mask = optim.decay_mask(params)
  sq = jax.tree_util.tree_map(lambda p, m: jnp.sum(p ** 2) if m else 0.0, params, mask)
  return sum(jax.tree_util.tree_leaves(sq))


def train_step(state: TrainState, batch, rng, *, axis_name: Optional[str] = None):
  """One gradient step. batch = {'image': (B,28,28,1) float in [0,1], 'label': (B,) int}.

  Returns (new_state, {'loss', 'accuracy', 'grad_norm'}); ``rng`` drives dropout
  and augmentation (folded with the device index under ``axis_name``).
  """
  if axis_name is not None:
    rng = jax.random.fold_in(rng, jax.lax.axis_index(axis_name))
  aug_rng, dropout_rng = jax.random.split(rng)
  images, labels = batch['image'], batch['label']
  if state.augment_fn is not None:
    images = state.augment_fn(aug_rng, images)
  targets = preprocess.one_hot(labels, state.num_classes)
  model = _model_for(state, axis_name)

  def loss_fn(params):
    variables = {**state.variables, 'params': params}
    logits, updates = model.apply(variables, images, train=True,
                                  rngs={'dropout': dropout_rng},
                                  mutable=['batch_stats'])
    loss = jnp.mean(state.loss_fn(logits, targets))
    if state.l2_weight:
      loss = loss + state.l2_weight * l2_penalty(params)
    return loss, (logits, updates)

  (loss, (logits, updates)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state.params)
  metrics = {'loss': loss,
             'accuracy': jnp.mean(jnp.argmax(logits, -1) == labels)}
  batch_stats = updates.get('batch_stats', state.batch_stats)
  if axis_name is not None:
    grads = jax.lax.pmean(grads, axis_name)
    metrics = jax.lax.pmean(metrics, axis_name)
    batch_stats = jax.lax.pmean(batch_stats, axis_name)
  metrics['grad_norm'] = optax.tree.norm(grads)
  param_updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
  new_state = state.replace(step=state.step + 1,
                            params=optax.apply_updates(state.params, param_updates),
                            batch_stats=batch_stats, opt_state=opt_state)
  return new_state, metrics


def eval_step(state: TrainState, batch, *, axis_name: Optional[str] = None):
  """Sums over a batch: {'loss', 'correct', 'count'} (divide to get means).

  batch may carry 'mask' (1 = real example, 0 = padding) so the last partial
  batch counts exactly; under ``axis_name`` the sums are psum'ed across devices.
  """
  images, labels = batch['image'], batch['label']
  mask = batch.get('mask', jnp.ones(labels.shape, jnp.float32))
  logits = state.model.apply(state.variables, images, train=False)
  loss = state.loss_fn(logits, preprocess.one_hot(labels, state.num_classes))
  correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
  sums = {'loss': jnp.sum(loss * mask), 'correct': jnp.sum(correct * mask),
          'count': jnp.sum(mask)}
  if axis_name is not None:
    sums = jax.lax.psum(sums, axis_name)
  return sums


def predict(state: TrainState, images):
  """Class probabilities softmax(f(x)) for float images (N, 28, 28, 1) in [0, 1]."""
  return jax.nn.softmax(state.model.apply(state.variables, images, train=False))
