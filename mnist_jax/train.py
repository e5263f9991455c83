"""The train state and the pure train/eval steps — the public research API.

One step of mini-batch gradient descent on a batch {x_i, y_i}, i = 1..B:
  x_i = prepare(p_i)   (data/preprocess.py: p/255 → augment → standardize, the
                        settings recorded in the state)
  L(w) = (1/B) Σ_i ℓ(f(x_i; w), onehot(y_i))  + λ‖w‖² if weight_decay_mode='l2'
  g = ∇_w L (backpropagation: the chain rule, output layer back to the input),
  w ← optimizer(w, g)  (nn/optim.py).
The metrics report the data loss (1/B) Σ ℓ — the number eval_step reports —
and, with 'l2', the penalty λ‖w‖² apart ('l2_penalty').
Randomness: the step's key is fold_in(rng, state.step), so a research loop that
passes one key still gets new dropout masks and augmentations every step.
On D devices the step runs as one global program: ``jax.jit`` with the
batch split over a mesh axis (a ``NamedSharding``) and the state replicated,
XLA inserting the all-reduces. Per-device code (``jax.shard_map``, or
``jax.pmap``) passes ``axis_name``: each device holds B/D examples, the
parameters enter the gradient as per-device values (``lax.pcast`` to
'varying'), and g, the batch-norm statistics and the metrics are averaged with
lax.pmean. Either way D devices compute the same update as one device on the
whole batch.

``TrainState`` is flax's ``flax.training.train_state.TrainState`` (step,
apply_fn, params, tx, opt_state, ``apply_gradients``) plus batch_stats and a
few static settings. Every static field is a hashable, comparable setting, so
two states built from equal configs compile once and ``tree_map`` over two
states works. No I/O here: import it, jit/vmap/shard_map the steps. A
``flax.nnx`` module trains with the same steps through
``nnx_bridge.from_nnx`` (and comes back with ``nnx_bridge.to_nnx``).

  state = create_train_state(config, jax.random.key(0))
  state, metrics = jax.jit(train_step)(state, batch, rng)
  mesh = jax.make_mesh((D,), ('batch',), axis_types=(jax.sharding.AxisType.Auto,))
  with jax.set_mesh(mesh):      # batch: device_put with NamedSharding(mesh, P('batch'))
    state, metrics = jax.jit(train_step)(state, batch, rng)
    step = jax.jit(jax.shard_map(functools.partial(train_step, axis_name='batch'),
                                 in_specs=(P(), P('batch'), P()), out_specs=P()))
"""
import dataclasses
import functools
import os
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn
from flax import struct
from flax.training import train_state

from mnist_jax import models
from mnist_jax.data import preprocess
from mnist_jax.errors import UserError
from mnist_jax.nn import losses, optim

DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}


@dataclasses.dataclass(frozen=True)
class ModelApply:
  """``model.apply``, equal for equal models (a bound method is equal only to itself)."""
  model: nn.Module

  def __call__(self, *args, **kwargs):
    return self.model.apply(*args, **kwargs)


class TrainState(train_state.TrainState):
  """flax's TrainState + batch-norm statistics + the static settings of the step.

  loss_name     config.loss ('cce', 'bce', 'mse', 'mae')
  l2_weight     λ of weight_decay_mode='l2' (0: no penalty in the loss)
  augment       data/preprocess.augment_settings(config.augment); () = off
  standardize   (μ, σ) when config.data.standardize: x' = (x − μ)/σ after
                augmentation, μ, σ = config.data.mean/std (the training split's); () = off
  ema_decay     d of the weight EMA (config.ema_decay; 0 = off, ``ema`` is {})

  ``ema`` = {'params', 'batch_stats'}: the weight EMA (``ema_update``) of the
  parameters and the batch-norm statistics alike (as timm's ModelEmaV2 averages
  a model's buffers). It holds usable weights at every step (no correction at
  read time): ``ema_state`` swaps them in, and a checkpoint's ``ema`` entry is
  the EMA model as it stands.
  """
  batch_stats: Any = struct.field(pytree_node=True, default_factory=dict)
  ema: Any = struct.field(pytree_node=True, default_factory=dict)
  loss_name: str = struct.field(pytree_node=False, default='cce')
  l2_weight: float = struct.field(pytree_node=False, default=0.0)
  augment: tuple = struct.field(pytree_node=False, default=())
  standardize: tuple = struct.field(pytree_node=False, default=())
  ema_decay: float = struct.field(pytree_node=False, default=0.0)

  @property
  def model(self) -> Optional[nn.Module]:
    """The flax module behind ``apply_fn`` (None for a plain function)."""
    return getattr(self.apply_fn, 'model', getattr(self.apply_fn, '__self__', None))

  @property
  def variables(self):
    """The flax variables {'params', 'batch_stats'?} for ``apply_fn``."""
    if self.batch_stats:
      return {'params': self.params, 'batch_stats': self.batch_stats}
    return {'params': self.params}

  def inputs(self, images, rng=None):
    """The model's input for uint8 pixels or floats x in [0, 1]: the recorded
    preprocessing (augmentation only when ``rng`` is given)."""
    return preprocess.prepare(images, rng, augment=self.augment if rng is not None else (),
                              stats=self.standardize)


def steps_per_epoch(config, num_train: Optional[int] = None) -> int:
  """⌊N_train / B⌋: full batches per epoch (the remainder is reshuffled next epoch).

  N_train: ``num_train``, else the run's recorded config.data.num_train, else
  config.data.train_limit (the training split's size when it is set). A
  schedule over epochs (every one but 'constant') spans T = ⌊N_train / B⌋ · E
  steps, so without N_train it is refused here: sized for a guess, η_t would
  reach 0 early and the parameters stop changing with no sign of it."""
  num_train = num_train or config.data.get('num_train') or config.data.train_limit
  if not num_train:
    if config.schedule != 'constant':
      raise UserError(
          f"the '{config.schedule}' learning-rate schedule spans config.num_epochs="
          f'{config.num_epochs} epochs and needs the number of training images: pass '
          'num_train=N (or data= to api.create), or set config.schedule=\'constant\'')
    return 1
  return max(1, num_train // config.batch_size)


def input_stats(config) -> tuple:
  """(μ, σ) of ``config.data`` when it standardizes, else ()."""
  if not config.data.standardize:
    return ()
  mean, std = config.data.get('mean'), config.data.get('std')
  if mean is None or std is None:
    raise UserError('config.data.standardize=True needs the training split\'s μ and σ: '
                    'train through mnist_jax.main (it computes them), pass data= to '
                    'api.create, or set config.data.mean and config.data.std')
  if not std > 0:
    raise UserError(f'config.data.std={std} must be > 0 (a training split of one '
                    'constant pixel value cannot be standardized); set standardize=False')
  return (float(mean), float(std))


def build_model(config, num_classes: Optional[int] = None) -> nn.Module:
  """The model of ``config.model`` with the config's compute dtype and K classes
  (``num_classes``, else the recorded config.data.num_classes, else the model's default)."""
  num_classes = num_classes or config.data.get('num_classes')
  overrides = {'num_classes': num_classes} if num_classes else {}
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


def l2_weight(config) -> float:
  """λ of the loss penalty λ‖w‖² (0 unless weight_decay_mode='l2')."""
  mode = config.weight_decay_mode
  if mode not in ('l2', 'decoupled'):
    raise UserError(f"unknown weight_decay_mode '{mode}'; use 'l2' or 'decoupled'")
  if mode == 'l2' and config.optimizer == 'adamw':
    raise UserError("optimizer='adamw' decays weights itself and would drop the "
                    "weight_decay_mode='l2' penalty; use optimizer='adam' with 'l2', "
                    "or weight_decay_mode='decoupled' with 'adamw'")
  return float(config.weight_decay) if mode == 'l2' else 0.0


def _cpu_option(name: str, value) -> dict:
  """{name: value} for a CPU compilation; {} on other platforms or where the user's
  XLA_FLAGS already sets ``name`` (their setting wins)."""
  if jax.default_backend() != 'cpu' or name in os.environ.get('XLA_FLAGS', ''):
    return {}
  return {name: value}


def once_compiler_options() -> dict:
  """XLA options for a program that runs once per run or epoch: a model's
  ``init``, a run's keys and an epoch's keys and batch order (engine/epoch.py).

  On the CPU, optimization level 1 instead of XLA's default 3: the same
  parameters, keys and order bit for bit (tests/test_train.py,
  tests/engine/test_epoch.py), compiled several times faster, since LLVM's
  level-3 passes spend long on random-number code and buy nothing for one call.
  A level set in XLA_FLAGS is left as it is; other platforms keep their defaults."""
  return _cpu_option('xla_backend_optimization_level', 1)


def compiler_options(config) -> Optional[dict]:
  """XLA options for the programs that train and evaluate the model (the step, the
  evaluation pass), from config.cpu_ynnpack.

  False, on the CPU: no YNNPACK library fusions (xla_cpu_experimental_ynn_fusion_type
  empty), so XLA:CPU runs convolutions, dots and reductions with its own kernels.
  Whether that pays depends on the shapes: YNNPACK runs the small 3×3 convolutions of
  SpeedNet at batch 60 on one thread, XLA's own kernels on both cores
  (configs/speedrun.py, docs/speed.md). Same arithmetic, other float rounding. None
  (XLA's defaults) where True, off the CPU, or where XLA_FLAGS already sets it."""
  if config.cpu_ynnpack:
    return None
  return _cpu_option('xla_cpu_experimental_ynn_fusion_type', '') or None


def init_program(model: nn.Module, compiler_options: Optional[dict] = None):
  """``model``'s flax ``init`` (train=False) as one jitted program of (rngs, x)."""
  return jax.jit(functools.partial(model.init, train=False), compiler_options=compiler_options)


def create_train_state(config, rng, *, num_train: Optional[int] = None,
                       num_classes: Optional[int] = None,
                       input_shape=(1, 28, 28, 1)) -> TrainState:
  """Initializes the model (flax ``init``) and the optax chain from ``config``;
  N_train, K, μ and σ as given, else as ``config.data`` records them."""
  model = build_model(config, num_classes)
  weight = l2_weight(config)
  loss_name = config.loss
  losses.get(loss_name)  # unknown names fail here, not inside jit
  # options apply to a top-level jit only; under a transformation (jax.eval_shape
  # reads a checkpoint's shapes) init is traced, not compiled
  options = {} if isinstance(rng, jax.core.Tracer) else once_compiler_options()
  variables = init_program(model, options)({'params': rng, 'dropout': rng},
                                           np.zeros(input_shape, np.float32))
  tx = optim.create_optimizer(config, steps_per_epoch(config, num_train))
  state = TrainState.create(
      apply_fn=ModelApply(model), params=variables['params'], tx=tx,
      batch_stats=variables.get('batch_stats', {}), loss_name=loss_name,
      l2_weight=weight, augment=preprocess.augment_settings(config.augment),
      standardize=input_stats(config), ema_decay=float(config.ema_decay))
  return initial(state)


def initial(state: TrainState) -> TrainState:
  """``state`` at step 0, its weight EMA (where ema_decay > 0) starting at the
  initial weights, v_ema = v (``ema_update`` then averages from there)."""
  if state.ema_decay:
    state = state.replace(ema={'params': state.params, 'batch_stats': state.batch_stats})
  return state.replace(step=jnp.asarray(np.zeros((), np.int32)))   # a transfer, no program


def ema_decay_at(decay: float, step):
  """d_t = min(d, (1 + t) / (10 + t)) at update t = 1, 2, ... (TF's
  ExponentialMovingAverage with ``num_updates``).

  Why this warm-up and not optax.ema(debias=True): early on the average spans
  about the last t/9 steps, so it forgets the random initial weights within the
  first epoch and tracks the trained ones (its validation accuracy after epoch 1
  is close to the raw weights'), while the bias-corrected mean of optax weights
  the first steps almost as much as the last when d^t is near 1 (d = 0.999: an
  epoch of 400 steps keeps d^t = 0.67). The stored value is the average itself,
  so no reader applies a correction."""
  t = jnp.asarray(step, jnp.float32)
  return jnp.minimum(decay, (1.0 + t) / (10.0 + t))


def ema_update(ema, new, decay: float, step=None):
  """v_ema ← d_t·v_ema + (1 − d_t)·v for every leaf of ``ema`` and ``new`` (same
  trees); d_t = ``ema_decay_at(decay, step)``, or d itself when ``step`` is None."""
  d = decay if step is None else ema_decay_at(decay, step)
  return jax.tree_util.tree_map(lambda e, v: d * e + (1.0 - d) * v, ema, new)


def ema_state(state: TrainState) -> TrainState:
  """``state`` with its EMA weights (and EMA batch-norm statistics) in place of the
  raw ones, for evaluation and prediction; ``state`` itself without an EMA."""
  if not state.ema:
    return state
  return state.replace(params=state.ema['params'], batch_stats=state.ema['batch_stats'])


def stacked_axes(state: TrainState) -> TrainState:
  """The ``jax.vmap`` axes of K TrainStates stacked on axis 0 that step together:
  every array on axis 0 but the one shared step counter."""
  return state.replace(step=None, params=0, batch_stats=0, opt_state=0, ema=0)


def _apply_fn(state, axis_name):
  """``apply_fn``, with batch norm reducing over ``axis_name`` (if the model has BN)."""
  model = state.model
  if (axis_name is not None and isinstance(model, nn.Module)
      and 'axis_name' in models.fields(type(model))):
    return model.clone(axis_name=axis_name).apply
  return state.apply_fn


def l2_penalty(params):
  """‖w‖² = Σ w² over the kernels (biases and BN scales excluded)."""
  mask = optim.decay_mask(params)
  sq = jax.tree_util.tree_map(lambda p, m: jnp.sum(p ** 2) if m else 0.0, params, mask)
  return sum(jax.tree_util.tree_leaves(sq))


def train_step(state: TrainState, batch, rng, *, axis_name: Optional[str] = None):
  """One gradient step. batch = {'image': (B, 28, 28, 1) uint8 pixels or floats x
  in [0, 1], 'label': (B,) int}.

  Returns (new_state, {'loss', 'accuracy', 'grad_norm'[, 'l2_penalty']}); the
  step's randomness is fold_in(rng, state.step) (and the device index under
  ``axis_name``), split into augmentation and dropout keys.
  """
  rng = jax.random.fold_in(rng, state.step)
  if axis_name is not None:
    rng = jax.random.fold_in(rng, jax.lax.axis_index(axis_name))
  aug_rng, dropout_rng = jax.random.split(rng)
  images, labels = state.inputs(batch['image'], aug_rng), batch['label']
  apply_fn = _apply_fn(state, axis_name)

  def loss_fn(params):
    variables = {**state.variables, 'params': params}
    logits, updates = apply_fn(variables, images, train=True,
                               rngs={'dropout': dropout_rng}, mutable=['batch_stats'])
    targets = preprocess.one_hot(labels, logits.shape[-1])
    data_loss = jnp.mean(losses.get(state.loss_name)(logits, targets))
    penalty = state.l2_weight * l2_penalty(params) if state.l2_weight else 0.0
    return data_loss + penalty, (data_loss, penalty, logits, updates)

  params = state.params
  if axis_name is not None:  # shard_map would psum the g of a replicated w; pmean below
    params = jax.lax.pcast(params, axis_name, to='varying')
  (_, (loss, penalty, logits, updates)), grads = jax.value_and_grad(
      loss_fn, has_aux=True)(params)
  metrics = {'loss': loss, 'accuracy': jnp.mean(jnp.argmax(logits, -1) == labels)}
  if state.l2_weight:
    metrics['l2_penalty'] = penalty
  batch_stats = updates.get('batch_stats', state.batch_stats)
  if axis_name is not None:
    grads = jax.lax.pmean(grads, axis_name)
    metrics = jax.lax.pmean(metrics, axis_name)
    batch_stats = jax.lax.pmean(batch_stats, axis_name)
  metrics['grad_norm'] = optax.tree.norm(grads)
  new = state.apply_gradients(grads=grads, batch_stats=batch_stats)
  if state.ema_decay:
    new = new.replace(ema=ema_update(
        state.ema, {'params': new.params, 'batch_stats': new.batch_stats}, state.ema_decay,
        new.step))
  return new, metrics


def eval_step(state: TrainState, batch, *, axis_name: Optional[str] = None):
  """Sums over a batch: {'loss', 'correct', 'count'} (divide to get means).

  batch as in train_step; it may carry 'mask' (1 = real example, 0 = padding)
  so the last partial batch counts exactly; under ``axis_name`` the sums are
  psum'ed across devices. The loss is the data loss (no penalty).
  """
  labels = batch['label']
  mask = batch.get('mask', jnp.ones(labels.shape, jnp.float32))
  logits = state.apply_fn(state.variables, state.inputs(batch['image']), train=False)
  loss = losses.get(state.loss_name)(logits, preprocess.one_hot(labels, logits.shape[-1]))
  correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
  sums = {'loss': jnp.sum(loss * mask), 'correct': jnp.sum(correct * mask),
          'count': jnp.sum(mask)}
  if axis_name is not None:
    sums = jax.lax.psum(sums, axis_name)
  return sums


def probabilities(logits, loss_name: str = 'cce'):
  """The class distribution q the loss models, from logits z (..., C):

    cce, mse, mae   q = softmax(z)
    bce             q_k = σ(z_k) / Σ_j σ(z_j)

  A bce model predicts C one-vs-rest probabilities σ(z_k) (its loss is on
  those); they need not sum to 1, so every use that needs a distribution
  (predict, NLL, the ECE's confidence max_k q_k, an ensemble's mean) takes the
  normalised q. argmax_k q_k = argmax_k z_k for every loss."""
  if loss_name == 'bce':
    s = jax.nn.sigmoid(logits)
    return s / jnp.sum(s, axis=-1, keepdims=True)
  return jax.nn.softmax(logits, axis=-1)


def predict(state: TrainState, images):
  """Class probabilities q (``probabilities``: softmax(f(x)), or the normalised
  σ(f(x)) of a bce model) for images (N, 28, 28, 1): uint8 pixels or floats x in
  [0, 1], preprocessed as the state was trained."""
  logits = state.apply_fn(state.variables, state.inputs(images), train=False)
  return probabilities(logits, state.loss_name)
