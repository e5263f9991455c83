"""A trained run, loaded once for whatever uses it: predict, the serve page, api, plots.

``load(workdir, which, weights=None)`` reads the run's recorded config (config.json),
restores its ``which`` checkpoint ('best' | 'latest', engine/rundir.py) and picks
the weights that are the model:

  weights = the argument, else the run's config.model_weights, else 'raw'
            'raw': the trained weights w;  'ema': the weight EMA (config.ema_decay > 0)

and returns them with what the run recorded about its data (data/describe.py):
the class count K and the class names, the standardization (μ, σ) and whether a
user's picture gets the digit steps of inspection/image.py. The state applies
the recorded preprocessing itself, so predictions need nothing else.
"""
import dataclasses
from typing import Any, Optional

from mnist_jax.engine import ensemble, evaluation, rundir
from mnist_jax.errors import UserError

WEIGHTS = ('raw', 'ema')


@dataclasses.dataclass(frozen=True)
class Trained:
  """A run's chosen weights and what it recorded. ``state``: a TrainState, or an
  ensemble.Ensemble for an ensemble run (config.ensemble.size > 1)."""
  config: Any
  state: Any
  meta: dict
  weights: str                  # 'raw' | 'ema'
  num_classes: int
  label_names: tuple
  stats: Optional[tuple]        # (μ, σ) of the standardization, None without one
  digits: bool                  # prepare_image's digit steps apply

  @property
  def model(self):
    """The flax module (an ensemble's members share it)."""
    return self.state.model

  @property
  def params(self):
    """The chosen parameters (stacked on axis 0 for an ensemble)."""
    return self.state.params


def model_weights(config, weights: Optional[str] = None) -> str:
  """``weights``, else the run's config.model_weights; UserError if unknown."""
  chosen = weights or config.model_weights
  if chosen not in WEIGHTS:
    raise UserError(f"unknown weights '{chosen}'; use weights='raw' or weights='ema' "
                    '(config.model_weights)')
  return chosen


def load(workdir: str, which: str = 'best', *, weights: Optional[str] = None) -> Trained:
  """The ``which`` checkpoint of the run in ``workdir`` with its chosen weights."""
  config, state, meta = rundir.load_run(workdir, which)
  chosen = model_weights(config, weights)
  if chosen == 'ema':
    if not state.ema:
      raise UserError(f'the run in {workdir} has no weight EMA (config.ema_decay = 0); '
                      "load its raw weights (weights='raw' / --config.model_weights=raw)")
    state = evaluation.ema_weights(state)
  template = state.template if isinstance(state, ensemble.Ensemble) else state
  d = config.data
  return Trained(config=config, state=state, meta={**meta, 'weights': chosen},
                 weights=chosen, num_classes=int(d.num_classes),
                 label_names=tuple(d.label_names), stats=template.standardize or None,
                 digits=bool(d.digits))
