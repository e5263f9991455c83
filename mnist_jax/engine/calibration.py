"""Calibration of predicted probabilities: does confidence match accuracy?

For N examples with probabilities p_i (C classes) and labels y_i, the
confidence c_i = max_k p_ik and the prediction ŷ_i = argmax_k p_ik:

  NLL = −(1/N) Σ_i log p_{i, y_i}                 (p clipped below at 1e-12)
  ECE = Σ_b (n_b / N) · |acc_b − conf_b|          (Guo et al. 2017)

over B = 15 equal-width confidence bins b = ((b−1)/B, b/B], with n_b the
examples in bin b, acc_b = (1/n_b) Σ_{i∈b} 1[ŷ_i = y_i] and conf_b their mean
confidence. A perfectly calibrated model (of 100 predictions at c = 0.8,
80 right) has ECE 0. ``reliability`` gives the per-bin numbers behind the
reliability diagram (inspection/figures.py). Pure numpy, no device work.
"""
import numpy as np

BINS = 15
_FLOOR = 1e-12


def nll(probs, labels) -> float:
  """−mean log p_y of probabilities (N, C) and labels (N,)."""
  probs, labels = np.asarray(probs, np.float64), np.asarray(labels)
  picked = probs[np.arange(len(labels)), labels]
  return float(-np.mean(np.log(np.maximum(picked, _FLOOR))))


def reliability(probs, labels, bins: int = BINS) -> dict:
  """Per equal-width confidence bin: 'count' n_b, 'accuracy' acc_b, 'confidence'
  conf_b (NaN for empty bins) and the bin 'edges' (bins + 1 of them)."""
  probs, labels = np.asarray(probs, np.float64), np.asarray(labels)
  conf = probs.max(-1)
  right = (probs.argmax(-1) == labels).astype(np.float64)
  which = np.clip(np.ceil(conf * bins).astype(int) - 1, 0, bins - 1)  # ((b-1)/B, b/B]
  count = np.bincount(which, minlength=bins).astype(np.float64)
  with np.errstate(invalid='ignore', divide='ignore'):
    acc = np.bincount(which, right, minlength=bins) / count
    mean_conf = np.bincount(which, conf, minlength=bins) / count
  return {'count': count.astype(np.int64), 'accuracy': acc, 'confidence': mean_conf,
          'edges': np.linspace(0.0, 1.0, bins + 1)}


def ece(probs, labels, bins: int = BINS) -> float:
  """Expected calibration error Σ_b (n_b/N)|acc_b − conf_b| over ``bins`` bins."""
  r = reliability(probs, labels, bins)
  full = r['count'] > 0
  n = r['count'].sum()
  return float(np.sum(r['count'][full] / n * np.abs(r['accuracy'][full]
                                                    - r['confidence'][full])))


def metrics(probs, labels) -> dict:
  """{'accuracy', 'nll', 'ece'} of probabilities (N, C) against labels (N,)."""
  probs = np.asarray(probs)
  if len(probs) == 0:
    return {'accuracy': float('nan'), 'nll': float('nan'), 'ece': float('nan')}
  return {'accuracy': float(np.mean(probs.argmax(-1) == np.asarray(labels))),
          'nll': nll(probs, labels), 'ece': ece(probs, labels)}
