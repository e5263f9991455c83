"""The one best-epoch rule: the epoch whose model scores highest on validation.

  e* = min argmax_e acc_val(e; w)      w = the run's model weights (config.model_weights:
                                        'raw' -> val_accuracy, 'ema' -> val_accuracy_ema)

The earliest epoch wins a tie, so a later epoch is 'best' only when it is
strictly better. Every reader of a run's history (the trainer's 'best'
checkpoint and summary.json, the checkpoint manager's ranking, the figures, a
search) picks its epoch here; the test split never enters the choice.
"""
from typing import Optional


def key(model_weights: str = 'raw') -> str:
  """The record key the rule ranks by: 'val_accuracy' or 'val_accuracy_ema'."""
  return 'val_accuracy_ema' if model_weights == 'ema' else 'val_accuracy'


def score(record: dict, model_weights: str = 'raw') -> Optional[float]:
  """The record's validation accuracy of the model's weights (None without one)."""
  return record.get(key(model_weights))


def best(history, model_weights: str = 'raw') -> Optional[dict]:
  """The record of e* in ``history`` (epoch records), or None without validation."""
  scored = [h for h in history if score(h, model_weights) is not None]
  if not scored:
    return None
  return max(scored, key=lambda h: (score(h, model_weights), -h['epoch']))


def improves(history, record: dict, model_weights: str = 'raw') -> bool:
  """Whether ``record`` becomes the new e* after ``history`` (strictly better)."""
  now = score(record, model_weights)
  if now is None:
    return False
  before = best(history, model_weights)
  return before is None or now > score(before, model_weights)
