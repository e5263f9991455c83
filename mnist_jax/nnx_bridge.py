"""A user's own ``flax.nnx`` module trained by ``train.train_step``, and back.

``from_nnx(module, tx)`` splits the module (``nnx.split``) into

  graphdef     its structure and settings: static, hashable, equal for equal modules
  params       its ``nnx.Param`` arrays: the w of L(w) that the optimizer updates
  batch_stats  its ``nnx.BatchStat`` arrays: batch norm's running μ and σ²

(the arrays as plain nested dicts, as Linen keeps them) and returns a
``train.TrainState`` whose ``apply_fn`` runs the module as a Linen ``apply``:

  apply_fn({'params', 'batch_stats'}, x, train=..., rngs={'dropout': k}, mutable=['batch_stats'])

merges the arrays into the module (``nnx.merge``), sets its mode with ``nnx.view``
(train=True: deterministic=False, use_running_average=False, so dropout is on and
batch norm normalizes with the batch's μ_B, σ²_B and updates its running averages;
train=False: the reverse) and returns the logits f(x; w), with the new batch
statistics when ``mutable``. ``train.train_step`` and ``train.eval_step`` then
train and evaluate it unchanged, under jax.jit (on one device or sharded across
many) and jax.vmap, and the state saves and restores with orbax like any other.
Under per-device code (jax.shard_map, jax.pmap) each device's ``nnx.BatchNorm``
normalizes with its own rows unless the module builds it with
``axis_name='batch'``; jit with a sharded batch normalizes over the whole batch.

Randomness: the module's RNG streams (the keys its ``nnx.Dropout`` layers hold)
are not training state. Every apply rebuilds them from one key k, stream i drawing
from fold_in(k, i): the step's dropout key in train mode, so each step draws new
masks as Linen's ``rngs={'dropout': k}`` does. The module's own seed only
initializes the weights.

``to_nnx(state)`` merges the trained arrays back into an ``nnx.Module``.

  model = MyCNN(rngs=nnx.Rngs(0))
  state = nnx_bridge.from_nnx(model, optax.adam(1e-3))
  state, metrics = jax.jit(train.train_step)(state, batch, jax.random.key(1))
  trained = nnx_bridge.to_nnx(state)
"""
import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from mnist_jax import train
from mnist_jax.errors import UserError


def _stream_leaf(spec: jax.ShapeDtypeStruct, key):
  """An RNG stream's key (split to the stored key's shape) or its count (0)."""
  if jnp.issubdtype(spec.dtype, jax.dtypes.prng_key):
    return jax.random.split(key, spec.shape) if spec.shape else key
  return jnp.zeros(spec.shape, spec.dtype)


@dataclasses.dataclass(frozen=True)
class NNXApply:
  """The ``apply_fn`` of a module made by ``from_nnx``: its graphdef and the layout
  of its RNG streams (a tree definition and the leaves' shapes), all hashable."""
  graphdef: nnx.GraphDef
  rng_tree: Any
  rng_leaves: tuple

  def module(self, variables, key) -> nnx.Module:
    """The module holding ``variables``, its RNG stream i seeded with fold_in(key, i)."""
    leaves = [_stream_leaf(spec, jax.random.fold_in(key, i))
              for i, spec in enumerate(self.rng_leaves)]
    return nnx.merge(self.graphdef, variables['params'], variables.get('batch_stats', {}),
                     jax.tree_util.tree_unflatten(self.rng_tree, leaves))

  def __call__(self, variables, x, *, train: bool = False, rngs=None, mutable=False):
    key = rngs['dropout'] if rngs else jax.random.key(0)  # eval mode draws nothing
    model = nnx.view(self.module(variables, key), deterministic=not train,
                     use_running_average=not train, raise_if_not_found=False)
    logits = model(x)
    if not mutable:
      return logits
    return logits, {'batch_stats': nnx.to_pure_dict(nnx.state(model, nnx.BatchStat))}


def from_nnx(module: nnx.Module, tx: optax.GradientTransformation,
             **settings) -> train.TrainState:
  """A ``train.TrainState`` (step 0) of ``module``'s parameters and batch statistics,
  optimized by ``tx``. ``settings`` are the state's static fields (loss_name,
  l2_weight, augment, standardize, ema_decay; see ``train.TrainState``).

  The module takes x, shape (B, 28, 28, 1), as ``state.inputs`` prepares it and
  returns the logits (B, K); it switches train/eval through the attributes that
  ``nnx.view`` sets (``nnx.Dropout.deterministic``,
  ``nnx.BatchNorm.use_running_average``)."""
  if not isinstance(module, nnx.Module):
    raise UserError(f'from_nnx takes a flax.nnx.Module, not {type(module).__name__}; '
                    'a Linen module trains as train.TrainState.create(apply_fn=model.apply, ...)')
  graphdef, params, batch_stats, rng_state, other = nnx.split(
      module, nnx.Param, nnx.BatchStat, nnx.RngState, ...)
  if jax.tree_util.tree_leaves(other):
    path, var = next(iter(nnx.to_flat_state(other)))
    raise UserError(f"module {type(module).__name__} holds {'.'.join(map(str, path))} as "
                    f'{type(var).__name__}: the step trains nnx.Param and updates '
                    'nnx.BatchStat only; declare it as one of those')
  leaves, rng_tree = jax.tree_util.tree_flatten(rng_state)
  apply_fn = NNXApply(graphdef, rng_tree,
                      tuple(jax.ShapeDtypeStruct(x.shape, x.dtype) for x in leaves))
  state = train.TrainState.create(
      apply_fn=apply_fn, params=nnx.to_pure_dict(params), tx=tx,
      batch_stats=nnx.to_pure_dict(batch_stats), **settings)
  return train.initial(state)


def to_nnx(state: train.TrainState, seed: int = 0) -> nnx.Module:
  """The ``nnx.Module`` of a ``from_nnx`` state holding its trained params and batch
  statistics (``nnx.merge``); its RNG streams start from key(seed). For inference
  take ``nnx.view(module, deterministic=True, use_running_average=True)``; its
  output on ``state.inputs(images)`` equals ``state.apply_fn(state.variables, ...)``."""
  if not isinstance(state.apply_fn, NNXApply):
    raise UserError('to_nnx takes a state made by nnx_bridge.from_nnx; a Linen state '
                    "applies its module as state.apply_fn(state.variables, x)")
  return state.apply_fn.module(state.variables, jax.random.key(seed))
