"""The optax chain built from a config: clip -> optimizer (with schedule) -> decay.

Update rules (g = ∇L(w), η_t the scheduled learning rate):
  sgd        w ← w − η g
  momentum   v ← β v + g;          w ← w − η v
  nesterov   v ← β v + g;          w ← w − η (g + β v)
  adam       m ← β1 m + (1−β1) g;  s ← β2 s + (1−β2) g²;  w ← w − η m̂ / (√ŝ + ε)
  adamw      adam, plus decoupled weight decay  w ← w − η λ w

Weight decay λ (config.weight_decay) comes in two forms (config.weight_decay_mode):
  'l2'         adds λ‖w‖² to the loss, so g gains 2λw and passes through the
               optimizer (for Adam it is then rescaled per coordinate) — see train.py;
  'decoupled'  shrinks weights directly, w ← w − η λ w, outside the adaptive
               rescaling (Loshchilov & Hutter 2019); 'adamw' is adam + this.
Decay applies to kernels only (ndim > 1), never to biases or batch-norm scales.

Schedules over T = steps_per_epoch · num_epochs steps, warmup W steps:
  constant       η_t = η
  cosine         η_t = η · ½(1 + cos(π t / T))
  warmup_cosine  linear 0 → η over W steps, then cosine to 0
  onecycle       linear η/25 → η over W (default 30 % of T), then cosine to η/1e4
"""
import jax
import optax

from mnist_jax.errors import UserError

OPTIMIZERS = ('sgd', 'momentum', 'nesterov', 'adam', 'adamw')
SCHEDULES = ('constant', 'cosine', 'warmup_cosine', 'onecycle')


def decay_mask(params):
  """True for the weights weight decay applies to: kernels (ndim > 1)."""
  return jax.tree_util.tree_map(lambda p: p.ndim > 1, params)


def learning_rate_schedule(config, steps_per_epoch: int) -> optax.Schedule:
  """η_t from config.schedule, config.learning_rate and config.warmup_epochs."""
  peak = config.learning_rate
  total = max(1, int(steps_per_epoch * config.num_epochs))
  warmup = int(round(config.warmup_epochs * steps_per_epoch))
  name = config.schedule
  if name == 'constant':
    return optax.constant_schedule(peak)
  if name == 'cosine':
    return optax.cosine_decay_schedule(peak, total)
  if name == 'warmup_cosine':
    return optax.warmup_cosine_decay_schedule(
        0.0, peak, min(warmup, total - 1), total)
  if name == 'onecycle':
    pct = warmup / total if warmup else 0.3
    return optax.cosine_onecycle_schedule(total, peak, pct_start=min(pct, 0.99))
  raise UserError(f"unknown schedule '{name}'; set config.schedule to one of "
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
  raise UserError(f"unknown optimizer '{name}'; set config.optimizer to one of "
                  f"{', '.join(OPTIMIZERS)}")


def create_optimizer(config, steps_per_epoch: int) -> optax.GradientTransformation:
  """clip_by_global_norm? -> decoupled decay? -> optimizer, with hyperparameters
  injected (``optax.inject_hyperparams``) so they can be read and swept."""
  schedule = learning_rate_schedule(config, steps_per_epoch)
  decoupled = config.weight_decay > 0 and (
      config.optimizer == 'adamw' or config.weight_decay_mode == 'decoupled')

  def chain(learning_rate, momentum, weight_decay):
    parts = []
    if config.grad_clip_norm > 0:
      parts.append(optax.clip_by_global_norm(config.grad_clip_norm))
    parts.append(_direction(config.optimizer, momentum, config.b2))
    if decoupled:  # d ← d + λ w, after the adaptive rescaling
      parts.append(optax.add_decayed_weights(weight_decay, decay_mask))
    parts.append(optax.scale_by_learning_rate(learning_rate))  # w ← w − η d
    return optax.chain(*parts)

  return optax.inject_hyperparams(chain)(
      learning_rate=schedule, momentum=config.momentum,
      weight_decay=config.weight_decay)
