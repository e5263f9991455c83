"""Checks a config before any work starts: impossible values fail in one line.

Each check names the key, the bad value, and what would be valid.
Names (model, loss, optimizer, schedule, activation) are checked where they
are looked up (registries), so their lists of valid choices stay in one place.
"""
from mnist_jax.data import augment
from mnist_jax.errors import UserError


def _require(ok: bool, message: str) -> None:
  if not ok:
    raise UserError(message)


def check(config, num_devices: int = 1) -> None:
  """Raises UserError on the first impossible hyperparameter."""
  _require(config.learning_rate > 0, f'learning_rate must be > 0, got '
           f'{config.learning_rate}; try 1e-3 (adam) or 0.1 (sgd/momentum)')
  _require(config.batch_size > 0, f'batch_size must be > 0, got {config.batch_size}; '
           'try 32, 64 or 128')
  _require(config.eval_batch_size > 0, 'eval_batch_size must be > 0, got '
           f'{config.eval_batch_size}; try 1000')
  _require(config.num_epochs > 0, f'num_epochs must be > 0, got {config.num_epochs}; '
           'try 10')
  _require(config.batch_size % num_devices == 0,
           f'batch_size {config.batch_size} is not divisible by the {num_devices} '
           f'devices; use a multiple of {num_devices} or set config.num_devices')
  _require(config.eval_batch_size % num_devices == 0,
           f'eval_batch_size {config.eval_batch_size} is not divisible by the '
           f'{num_devices} devices; use a multiple of {num_devices}')
  _require(0 <= config.momentum < 1, f'momentum must be in [0, 1), got '
           f'{config.momentum}; the usual value is 0.9')
  _require(0 <= config.b2 < 1, f'b2 must be in [0, 1), got {config.b2}; try 0.999')
  _require(config.weight_decay >= 0, f'weight_decay must be >= 0, got '
           f'{config.weight_decay}; the usual value is 1e-4')
  _require(config.grad_clip_norm >= 0, 'grad_clip_norm must be >= 0 (0 = off), got '
           f'{config.grad_clip_norm}')
  _require(0 <= config.warmup_epochs < config.num_epochs,
           f'warmup_epochs must be in [0, num_epochs={config.num_epochs}), got '
           f'{config.warmup_epochs}')
  _require(config.norm_bias_lr_scale > 0, 'norm_bias_lr_scale must be > 0 (1 = the '
           f'same η as the other parameters), got {config.norm_bias_lr_scale}')
  rate = config.model.get('dropout_rate', 0.0)
  _require(0 <= rate < 1, f'model.dropout_rate must be in [0, 1), got {rate}; '
           'the primer suggests 0.2-0.5')
  _require(config.data.val_size >= 0, f'data.val_size must be >= 0, got '
           f'{config.data.val_size}; the default is 5000')
  _require(config.data.train_limit >= 0, 'data.train_limit must be >= 0 (0 = all), '
           f'got {config.data.train_limit}')
  augment.check(config.augment)
  _require(config.checkpoint_every_epochs >= 0, 'checkpoint_every_epochs must be >= 0')
  _require(config.keep_checkpoints >= 1, 'keep_checkpoints must be >= 1, got '
           f'{config.keep_checkpoints}')
  _require(config.num_devices >= 0, 'num_devices must be >= 0 (0 = all local devices)')
  size = config.ensemble.size
  _require(isinstance(size, int) and size >= 1, f'ensemble.size must be an integer >= 1 '
           f'(1 = one model), got {size!r}; try 1, 3 or 5')
  _require(0 <= config.ema_decay < 1, f'ema_decay must be in [0, 1) (0 = off), got '
           f'{config.ema_decay}; the usual value is 0.999')
  weights = config.model_weights
  _require(weights in ('raw', 'ema'), f"model_weights must be 'raw' or 'ema', got "
           f'{weights!r}')
  _require(weights == 'raw' or config.ema_decay > 0, "model_weights='ema' needs a weight "
           'EMA; set config.ema_decay (e.g. 0.999) or model_weights=raw')
  _require(config.loop_mode in ('scan', 'step'), f"loop_mode must be 'scan' or 'step', "
           f'got {config.loop_mode!r}')
