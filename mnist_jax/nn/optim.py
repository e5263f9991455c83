"""The optax chain built from a config: clip -> optimizer (with schedule) -> decay.

Update rules (g = ∇L(w), η_t the scheduled learning rate):
  sgd        w ← w − η g
  momentum   v ← β v + g;          w ← w − η v
  nesterov   v ← β v + g;          w ← w − η (g + β v)
  adam       m ← β1 m + (1−β1) g;  s ← β2 s + (1−β2) g²;  w ← w − η m̂ / (√ŝ + ε)
  adamw      adam, plus decoupled weight decay  w ← w − η λ w
  muon       conv kernels (K, K, C, F), read as (K·K·C) × F matrices G: momentum
             M ← β M + G (Nesterov), then O = NS₅(M), the Newton–Schulz
             approximation of the orthogonal polar factor U Vᵀ of M = U Σ Vᵀ
             (optax.contrib.scale_by_muon), scaled to RMS 0.2 (O · 0.2·√max(m, n):
             the update size of Adam's, so one η serves both); w ← w − η O.
             Every other parameter (biases, BN, dense) steps with adam.

Weight decay λ (config.weight_decay) comes in two forms (config.weight_decay_mode):
  'l2'         adds λ‖w‖² to the loss, so g gains 2λw and passes through the
               optimizer (for Adam it is then rescaled per coordinate) — see train.py;
  'decoupled'  shrinks weights directly, w ← w − η λ w, outside the adaptive
               rescaling (Loshchilov & Hutter 2019); 'adamw' is adam + this.
Decay applies to kernels only (ndim > 1), never to biases or batch-norm scales.

config.norm_bias_lr_scale = c multiplies the step of every normalization layer's
bias β (a leaf 'bias' beside a leaf 'scale': BatchNorm, LayerNorm) by c, after
the learning rate: w_β ← w_β − c η_t d_β (airbench trains its BN biases at 64x).

Schedules over T = steps_per_epoch · num_epochs steps, warmup W steps (each is
η_t = η · s(t), s the schedule with peak 1; the step computes the product, so η
is an input of the compiled program, not a constant):
  constant       η_t = η
  cosine         η_t = η · ½(1 + cos(π t / T))
  warmup_cosine  linear 0 → η over W steps, then cosine to 0
  onecycle       linear η/25 → η over W (default 30 % of T), then cosine down
                 to (η/25)/1e4 = η/(25·10⁴) (optax's div_factor and final_div_factor)

``create_optimizer`` returns an ``Optimizer``: the optax chain's settings as a
frozen (hashable, comparable) dataclass whose ``init``/``update`` are the chain's.
Two train states built from equal configs therefore hold equal optimizers and
share one compilation (a plain optax chain is a pair of closures, equal only to
itself). It is a drop-in ``optax.GradientTransformation`` wherever one is used.
"""
import dataclasses
import functools
import math

import jax
import optax
from flax import traverse_util

from mnist_jax.errors import UserError

OPTIMIZERS = ('sgd', 'momentum', 'nesterov', 'adam', 'adamw', 'muon')
MUON_RMS = 0.2   # the RMS of a muon update: about Adam's, so the two share η
SCHEDULES = ('constant', 'cosine', 'warmup_cosine', 'onecycle')


def decay_mask(params):
  """True for the weights weight decay applies to: kernels (ndim > 1)."""
  return jax.tree_util.tree_map(lambda p: p.ndim > 1, params)


def norm_bias_mask(params):
  """True for the biases of normalization layers: a leaf 'bias' whose module also
  holds a leaf 'scale' (BatchNorm, LayerNorm; a Dense or Conv holds 'kernel')."""
  flat = traverse_util.flatten_dict(params)
  return traverse_util.unflatten_dict(
      {path: path[-1] == 'bias' and path[:-1] + ('scale',) in flat for path in flat})


def muon_mask(params):
  """True for the parameters muon steps: convolution kernels (ndim 4)."""
  return jax.tree_util.tree_map(lambda p: p.ndim == 4, params)


def _rms_matched() -> optax.GradientTransformation:
  """O ← O · MUON_RMS · √max(m, n) for a kernel read as an m × n matrix
  (m = K·K·C, n = F): an orthogonal O of rank min(m, n) has RMS 1/√max(m, n)."""
  def scale(o):
    m, n = math.prod(o.shape[:-1]), o.shape[-1]
    return o * (MUON_RMS * math.sqrt(max(m, n)))
  return optax.stateless(lambda updates, params=None: jax.tree_util.tree_map(scale, updates))


def _muon(momentum, b2) -> optax.GradientTransformation:
  """optax's Newton–Schulz muon for the conv kernels (rows K·K·C, columns F), adam
  for the rest."""
  dims = optax.contrib.MuonDimensionNumbers(reduction_axis=(0, 1, 2), output_axis=(3,))
  orthogonal = optax.chain(
      optax.contrib.scale_by_muon(
          beta=momentum, weight_dimension_numbers=lambda u: jax.tree_util.tree_map(
              lambda _: dims, u)),
      _rms_matched())
  return optax.partition(
      {'muon': orthogonal, 'adam': optax.scale_by_adam(b1=momentum, b2=b2)},
      lambda params: jax.tree_util.tree_map(
          lambda m: 'muon' if m else 'adam', muon_mask(params)))


def learning_rate_schedule(config, steps_per_epoch: int) -> optax.Schedule:
  """η_t from config.schedule, config.learning_rate and config.warmup_epochs."""
  return _schedule(Optimizer.from_config(config, steps_per_epoch))


def _schedule(o: 'Optimizer') -> optax.Schedule:
  peak, total = o.learning_rate, max(1, int(o.steps_per_epoch * o.num_epochs))
  warmup = int(round(o.warmup_epochs * o.steps_per_epoch))
  if o.schedule == 'constant':
    return optax.constant_schedule(peak)
  if o.schedule == 'cosine':
    return optax.cosine_decay_schedule(peak, total)
  if o.schedule == 'warmup_cosine':
    return optax.warmup_cosine_decay_schedule(0.0, peak, min(warmup, total - 1), total)
  if o.schedule == 'onecycle':
    pct = warmup / total if warmup else 0.3
    return optax.cosine_onecycle_schedule(total, peak, pct_start=min(pct, 0.99))
  raise UserError(f"unknown schedule '{o.schedule}'; set config.schedule to one of "
                  f"{', '.join(SCHEDULES)}")


def _direction(name, momentum, b2) -> optax.GradientTransformation:
  """The optimizer's update direction d (the step is then w ← w − η d)."""
  if name == 'sgd':
    return optax.identity()
  if name == 'momentum':
    return optax.trace(decay=momentum)
  if name == 'nesterov':
    return optax.trace(decay=momentum, nesterov=True)
  if name in ('adam', 'adamw'):
    return optax.scale_by_adam(b1=momentum, b2=b2)
  if name == 'muon':
    return _muon(momentum, b2)
  raise UserError(f"unknown optimizer '{name}'; set config.optimizer to one of "
                  f"{', '.join(OPTIMIZERS)}")


@dataclasses.dataclass(frozen=True)
class Optimizer:
  """The settings of clip? -> direction -> decoupled decay? -> −η_t, and the chain."""
  optimizer: str
  learning_rate: float
  momentum: float
  b2: float
  weight_decay: float
  decoupled: bool
  grad_clip_norm: float
  schedule: str
  num_epochs: float
  warmup_epochs: float
  steps_per_epoch: int
  batch_size: int
  norm_bias_lr_scale: float = 1.0

  @classmethod
  def from_config(cls, config, steps_per_epoch: int, **changes) -> 'Optimizer':
    decoupled = config.weight_decay > 0 and (
        config.optimizer == 'adamw' or config.weight_decay_mode == 'decoupled')
    settings = cls(
        optimizer=config.optimizer, learning_rate=float(config.learning_rate),
        momentum=float(config.momentum), b2=float(config.b2),
        weight_decay=float(config.weight_decay), decoupled=bool(decoupled),
        grad_clip_norm=float(config.grad_clip_norm), schedule=config.schedule,
        num_epochs=float(config.num_epochs), warmup_epochs=float(config.warmup_epochs),
        steps_per_epoch=int(steps_per_epoch), batch_size=int(config.batch_size),
        norm_bias_lr_scale=float(config.norm_bias_lr_scale))
    return dataclasses.replace(settings, **changes)

  @property
  def chain(self) -> optax.GradientTransformation:
    return _build(self)

  def init(self, params):
    return jax.jit(self.chain.init)(params)  # one program, not one per leaf and op

  def update(self, updates, state, params=None):
    return self.chain.update(updates, state, params)


@functools.lru_cache(maxsize=64)
def _build(o: Optimizer) -> optax.GradientTransformation:
  """The optax chain of ``o``. Its hyperparameters are injected
  (``optax.inject_hyperparams``): η, β, λ are arrays in the optimizer state and
  the schedule is its peak-1 shape s(t), so η_t = η · s(t) is computed in the
  step. A program never holds η, β or λ as constants: configs that differ only
  in them compile to one program (a sweep's trials share the persistent
  compilation cache; K stacked models set their own, engine/stacked.py)."""
  shape = _schedule(dataclasses.replace(o, learning_rate=1.0))

  def chain(schedule, learning_rate, momentum, weight_decay):
    parts = []
    if o.grad_clip_norm > 0:
      parts.append(optax.clip_by_global_norm(o.grad_clip_norm))
    parts.append(_direction(o.optimizer, momentum, o.b2))
    if o.decoupled:  # d ← d + λ w, after the adaptive rescaling
      parts.append(optax.add_decayed_weights(weight_decay, decay_mask))
    parts.append(optax.scale_by_learning_rate(learning_rate * schedule))  # w ← w − η s(t) d
    if o.norm_bias_lr_scale != 1.0:   # w_β ← w_β − c η s(t) d_β
      parts.append(optax.masked(optax.scale(o.norm_bias_lr_scale), norm_bias_mask))
    return optax.chain(*parts)

  return optax.inject_hyperparams(chain)(
      schedule=shape, learning_rate=o.learning_rate, momentum=o.momentum,
      weight_decay=o.weight_decay)


def create_optimizer(config, steps_per_epoch: int) -> Optimizer:
  """The config's optimizer: clip_by_global_norm? -> optimizer -> decoupled decay?
  -> learning-rate schedule, as a hashable ``Optimizer``."""
  return Optimizer.from_config(config, steps_per_epoch)
