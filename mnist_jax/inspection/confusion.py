"""What a model gets wrong on a split, as numbers: the confusion matrix and the
most confident mistakes (drawn by inspection/figures.py, served by inspection/live.py)."""
import numpy as np


def confusion_matrix(labels, preds, num_classes=10) -> np.ndarray:
  """C[i, j] = number of examples of true class i predicted as class j."""
  matrix = np.zeros((num_classes, num_classes), np.int64)
  np.add.at(matrix, (np.asarray(labels), np.asarray(preds)), 1)
  return matrix


def mistakes(labels, probs, count=24) -> np.ndarray:
  """Indices of the ``count`` wrong predictions ŷ = argmax p with the highest p(ŷ)."""
  preds = probs.argmax(-1)
  wrong = np.flatnonzero(preds != labels)
  return wrong[np.argsort(-probs[wrong, preds[wrong]], kind='stable')][:count]
