"""Where per-epoch metrics go: ``metrics.jsonl`` (one JSON object per epoch) and
TensorBoard event files (via tensorboardX: real TensorBoard events without
importing TensorFlow, which would dominate a command's start-up). Only process 0 writes.
"""
import json
import os

import jax


class MetricWriter:
  """Appends epoch records to ``workdir/metrics.jsonl`` and TensorBoard scalars."""

  def __init__(self, workdir: str, hparams: dict = None):
    self.active = jax.process_index() == 0
    self.path = os.path.join(workdir, 'metrics.jsonl')
    self._tb = None
    if self.active:
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      self._tb = SummaryWriter(os.path.join(workdir, 'tensorboard'))
      if hparams:
        self._tb.add_text('config', '```\n' + json.dumps(hparams, indent=1) + '\n```', 0)

  def truncate_after(self, epoch: int) -> None:
    """Drops records after ``epoch`` (a resumed run rewrites them)."""
    if not self.active or not os.path.exists(self.path):
      return
    with open(self.path) as f:
      keep = [l for l in f if l.strip() and json.loads(l)['epoch'] <= epoch]
    tmp = self.path + '.tmp'
    with open(tmp, 'w') as f:
      f.writelines(keep)
    os.replace(tmp, self.path)

  def write_epoch(self, record: dict) -> None:
    if not self.active:
      return
    with open(self.path, 'a') as f:
      f.write(json.dumps(record) + '\n')
    for key, value in record.items():
      if key != 'epoch' and isinstance(value, (int, float)):
        self._tb.add_scalar(key.replace('_', '/', 1), value, record['epoch'])
    self._tb.flush()

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()


def write_json_atomic(path: str, obj) -> None:
  """Writes JSON via a temporary file + rename: readers never see half a file."""
  if jax.process_index() != 0:
    return
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    json.dump(obj, f, indent=2, sort_keys=True)
    f.write('\n')
  os.replace(tmp, path)
