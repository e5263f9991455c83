"""Deep ensembles (Lakshminarayanan et al. 2017): the Ensemble prediction type.

``config.ensemble.size = K`` makes K members: member k is the config with seed
s_k = config.seed + k (member 0 is the single run of the config), with its own
initial weights, data order, augmentation and dropout draws. They train as one
run of engine/stacked.py's K models and are checkpointed stacked; ``Ensemble`` is that value as a predictor.

The ensemble predicts the mean of its members' class distributions q_k
(train.probabilities: softmax, or the normalised σ of a bce model; not logits),

  p(y | x) = (1/K) Σ_k q(f(x; w_k)),      ŷ = argmax_y p(y | x),

and its members' disagreement on an image is reported two ways:
  spread     std_k of p_k(ŷ | x), the members' probabilities of the ensemble's class
  dissent    the fraction of members whose own argmax differs from ŷ.

The memory K members need is engine/memory.py's estimate.
"""
import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mnist_jax import models, train
from mnist_jax.errors import UserError


def size(config) -> int:
  """K of ``config`` (1: not an ensemble)."""
  return int(config.get('ensemble', {}).get('size', 1))


def member_configs(config) -> list:
  """The K member configs: ``config`` with seed = config.seed + k."""
  out = []
  for k in range(size(config)):
    c = config.copy_and_resolve_references()
    with c.unlocked():
      c.seed = int(config.seed) + k
    out.append(c)
  return out


@dataclasses.dataclass(frozen=True)
class Ensemble:
  """K members of one architecture: ``template`` (a member as a TrainState: model,
  preprocessing) and its variables stacked on axis 0."""
  template: Any
  params: Any
  batch_stats: Any
  ema: Any = dataclasses.field(default_factory=dict)

  @property
  def size(self) -> int:
    return int(jax.tree_util.tree_leaves(self.params)[0].shape[0])

  @property
  def model(self):
    return self.template.model

  @property
  def augment(self):
    return self.template.augment

  def member(self, k: int):
    """Member k as a single TrainState (for plots of its layers)."""
    pick = lambda t: jax.tree_util.tree_map(lambda x: x[k], t)
    return self.template.replace(params=pick(self.params), batch_stats=pick(self.batch_stats),
                                 ema=pick(self.ema))

  def stacked_state(self):
    """The members as one stacked TrainState (engine/stacked.py's form) for the one
    evaluation pass: convolutions as patches + matmul, so vmap batches them."""
    model = models.vmapped(self.template.model)
    return self.template.replace(apply_fn=train.ModelApply(model), params=self.params,
                                 batch_stats=self.batch_stats, ema=self.ema, opt_state=None)

  def with_ema(self) -> 'Ensemble':
    """The ensemble of the members' EMA weights (itself without an EMA)."""
    if not self.ema:
      return self
    return dataclasses.replace(self, params=self.ema['params'],
                               batch_stats=self.ema['batch_stats'])


def from_state(s) -> Ensemble:
  """The Ensemble of a stacked TrainState (stacked.create's form; a loaded run)."""
  return Ensemble(s.replace(params=None, batch_stats=None, ema=None, opt_state=None),
                  s.params, s.batch_stats, s.ema)


def _signatures(tree) -> dict:
  return {jax.tree_util.keystr(p): f'{np.dtype(x.dtype)}{list(np.shape(x))}'
          for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


def stack(states) -> Ensemble:
  """An Ensemble of single TrainStates of one architecture; UserError naming the
  first array whose shape differs between member 0 and another member."""
  states = list(states)
  if not states:
    raise UserError('an ensemble needs at least one member; pass a list of train states')
  first = _signatures(states[0].variables)
  for k, s in enumerate(states[1:], 1):
    other = _signatures(s.variables)
    if other != first:
      name = min(n for n in {**first, **other} if first.get(n) != other.get(n))
      raise UserError(f'ensemble members disagree on shape: member {k} has {name} '
                      f'{other.get(name, "absent")} where member 0 has '
                      f'{first.get(name, "absent")}; an ensemble needs members of one '
                      'model config (train it with config.ensemble.size = K)')
  st = lambda trees: jax.tree_util.tree_map(lambda *a: jnp.stack(a), *trees)
  ema = st([s.ema for s in states]) if all(s.ema for s in states) else {}
  return Ensemble(states[0], st([s.params for s in states]),
                  st([s.batch_stats for s in states]), ema)


def combine(member_probs) -> np.ndarray:
  """The ensemble's probabilities: the mean of the members' (K, N, C) -> (N, C)."""
  return np.mean(np.asarray(member_probs, np.float64), axis=0).astype(np.float32)


def disagreement(member_probs) -> dict:
  """Per image (N,): 'spread' = std_k p_k(ŷ) and 'dissent' = fraction of members
  whose argmax is not the ensemble's ŷ."""
  member_probs = np.asarray(member_probs)
  vote = combine(member_probs).argmax(-1)
  rows = np.arange(member_probs.shape[1])
  return {'spread': member_probs[:, rows, vote].std(axis=0),
          'dissent': np.mean(member_probs.argmax(-1) != vote[None], axis=0)}


