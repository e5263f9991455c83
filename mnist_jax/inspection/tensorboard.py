"""A run's figures in TensorBoard: the PNGs as images and the config as hparams
with the final and best-validation metrics (the test figures are summary.json's:
the test split is read once, at the end; the best epoch is store/selection.py's)."""
import json
import os

import numpy as np

from mnist_jax.config import overrides
from mnist_jax.store import selection


def _summary(workdir) -> dict:
  """The run's summary.json ({} while it has none)."""
  path = os.path.join(workdir, 'summary.json')
  if not os.path.isfile(path):
    return {}
  with open(path) as f:
    return json.load(f)


def write_tensorboard(workdir, paths, config, history) -> None:
  """The PNGs as TensorBoard images and the config as hparams with the final
  metrics, in an event file of their own (suffix '.plots': two writers opened
  in the same second would otherwise share a file name)."""
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top  (reads the PNGs)
  from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
  from tensorboardX.summary import hparams  # pylint: disable=g-import-not-at-top
  step = history[-1]['epoch'] if history else 0
  with SummaryWriter(os.path.join(workdir, 'tensorboard'), filename_suffix='.plots') as tb:
    for path in paths:
      image = (plt.imread(path)[..., :3] * 255).astype(np.uint8)
      tb.add_image('plots/' + os.path.splitext(os.path.basename(path))[0], image, step,
                   dataformats='HWC')
    if not history:
      return
    final = {**history[-1], **_summary(workdir)}
    metrics = {f'final/{k}': final[k] for k in ('test_accuracy', 'test_loss',
                                                 'val_accuracy', 'val_loss')
               if isinstance(final.get(k), (int, float))}
    weights = config.model_weights
    best = selection.best(history, weights)
    if best:
      metrics['best/val_accuracy'] = selection.score(best, weights)
      if isinstance(final.get('test_accuracy_at_best_val'), (int, float)):
        metrics['best/test_accuracy'] = final['test_accuracy_at_best_val']
    hp = {k: v if isinstance(v, (int, float, str, bool)) else str(v)
          for k, v in overrides.flat(config.to_dict()).items()}
    for summary in hparams(hp, metrics):  # the HParams dashboard
      tb.file_writer.add_summary(summary)
    for key, value in metrics.items():
      tb.add_scalar(key, value, step)
