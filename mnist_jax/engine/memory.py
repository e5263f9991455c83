"""The memory an ensemble of K members needs, estimated before anything is built.

One member holds its parameters, their gradient, the optimizer's slots and the
weight EMA, plus every layer's activations of one training batch (kept for the
backward pass and its gradient); K members need K times that. ``check_memory``
stops a run whose K members would not fit, naming the size that does.
"""
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from mnist_jax import train
from mnist_jax.engine import ensemble
from mnist_jax.errors import UserError


def _available_bytes() -> int:
  """The first device's memory limit (accelerators) or the host's available memory."""
  stats = None
  try:
    stats = jax.devices()[0].memory_stats()
  except Exception:  # pylint: disable=broad-except  (CPU backends have none)
    stats = None
  if stats and stats.get('bytes_limit'):
    return int(stats['bytes_limit']) - int(stats.get('bytes_in_use', 0))
  return os.sysconf('SC_AVPHYS_PAGES') * os.sysconf('SC_PAGE_SIZE')


def member_bytes(config, num_classes: int = 10) -> dict:
  """Estimated bytes of one member, from shapes only (jax.eval_shape, nothing
  computed): 'state' = params (+ gradient + optimizer state + EMA) and
  'activations' = every layer's output for one training batch, twice (kept for
  the backward pass and its gradient)."""
  model = train.build_model(config, num_classes)
  x = jax.ShapeDtypeStruct((config.batch_size, 28, 28, 1), jnp.float32)
  variables = jax.eval_shape(functools.partial(model.init, train=False),
                             {'params': jax.random.key(0), 'dropout': jax.random.key(0)}, x)
  nbytes = lambda tree: sum(int(np.prod(a.shape)) * np.dtype(a.dtype).itemsize
                            for a in jax.tree_util.tree_leaves(tree) if hasattr(a, 'shape'))
  params = nbytes(variables['params'])
  slots = {'adam': 2, 'adamw': 2, 'momentum': 1, 'nesterov': 1}.get(config.optimizer, 0)
  state = params * (2 + slots + (1 if config.ema_decay else 0)) + 2 * nbytes(
      variables.get('batch_stats', {}))
  outputs = []

  def grab(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    outputs.append(out)
    return out

  def forward(v, x):
    with nn.intercept_methods(grab):
      return model.apply(v, x, train=True, rngs={'dropout': jax.random.key(0)},
                         mutable=['batch_stats'])

  jax.eval_shape(forward, variables, x)
  acts = sum(nbytes(o) for o in outputs)   # nested modules count twice: an upper estimate
  return {'state': state, 'activations': 2 * acts}


def check_memory(config, num_classes: int = 10, available=None) -> None:
  """UserError if ``config.ensemble.size`` members will not fit in memory (90 %
  of the device's free memory, or the host's for CPU), naming the size that fits."""
  k_models = ensemble.size(config)
  if k_models == 1:
    return
  per = member_bytes(config, num_classes)
  one = per['state'] + per['activations']
  available = _available_bytes() if available is None else available
  budget = 0.9 * available
  if k_models * one <= budget:
    return
  fits = int(budget // one)
  mib = lambda b: f'{b / 2 ** 20:,.0f} MiB'
  raise UserError(
      f'ensemble.size={k_models} needs about {mib(k_models * one)} ({mib(one)} per member: '
      f'{mib(per["state"])} weights and optimizer, {mib(per["activations"])} activations '
      f'of a batch of {config.batch_size}) but {mib(available)} are free; '
      + (f'set config.ensemble.size <= {fits}' if fits >= 1 else
         'not even one member fits: lower config.batch_size') + ' or lower batch_size')
