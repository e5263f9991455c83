"""Where per-epoch metrics go: ``metrics.jsonl`` (one JSON object per epoch) and
TensorBoard event files (via tensorboardX: real TensorBoard events without
importing TensorFlow, which would dominate a command's start-up). Only process 0 writes.
Metrics stay pytrees {split: {weights: {metric: value}}} until ``flatten`` gives
them the record keys that metrics.jsonl and summary.json document.

``write_atomic`` is the project's one atomic file writer (``write_json_atomic``
and the search tables use it): a temporary file of this writer's own (process
id + random suffix) renamed over the target, so a reader never sees half a
file and writers racing on one path leave one whole version.
"""
import json
import os
import uuid

import jax
import numpy as np


def tail(weights: str) -> str:
  """The key suffix of a weights' metric: '' for the raw weights, '_ema' for the EMA."""
  return '' if weights == 'raw' else '_' + weights


def flatten(tree: dict, prefix: str = '') -> dict:
  """The documented record keys of a metric pytree {split: {weights: {metric: v}}}:

    '<prefix><split>_<metric><tail(weights)>': float(v)

  e.g. {'val': {'ema': {'accuracy': 0.99}}} -> {'val_accuracy_ema': 0.99}. The one
  place metric keys are made; every value is a scalar (a model's own tree)."""
  return {f'{prefix}{split}_{metric}{tail(w)}': float(np.asarray(v))
          for split, by_weights in tree.items() for w, metrics in by_weights.items()
          for metric, v in metrics.items()}


class MetricWriter:
  """Writes epoch records to ``workdir/metrics.jsonl`` and TensorBoard scalars.

  ``metrics.jsonl`` is rewritten whole and atomically (``write_atomic``) with
  every record, so a crash never leaves a cut line: a file that holds one was
  damaged after the fact (engine/rundir.load_history names it)."""

  def __init__(self, workdir: str, hparams: dict = None, history=()):
    """``history``: the records a resumed run keeps (its checkpoint's); the
    file then holds exactly those, records of later epochs are replayed."""
    self.active = jax.process_index() == 0
    self.path = os.path.join(workdir, 'metrics.jsonl')
    self._lines = [json.dumps(r) + '\n' for r in history]
    self._tb = None
    if self.active:
      write_atomic(self.path, ''.join(self._lines))
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      self._tb = SummaryWriter(os.path.join(workdir, 'tensorboard'))
      if hparams:
        self._tb.add_text('config', '```\n' + json.dumps(hparams, indent=1) + '\n```', 0)

  def write_epoch(self, record: dict) -> None:
    if not self.active:
      return
    self._lines.append(json.dumps(record) + '\n')
    write_atomic(self.path, ''.join(self._lines))
    for key, value in record.items():
      if key != 'epoch' and isinstance(value, (int, float)):
        self._tb.add_scalar(key.replace('_', '/', 1), value, record['epoch'])
    self._tb.flush()

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()


def write_atomic(path: str, text: str) -> None:
  """Writes ``text`` to ``path`` via a temporary file of its own + rename."""
  tmp = f'{path}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp'
  try:
    with open(tmp, 'w') as f:
      f.write(text)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def write_json_atomic(path: str, obj) -> None:
  """Writes JSON atomically (``write_atomic``) on process 0: readers never see half a file."""
  if jax.process_index() != 0:
    return
  write_atomic(path, json.dumps(obj, indent=2, sort_keys=True) + '\n')
