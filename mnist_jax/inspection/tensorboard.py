"""A run's figures in TensorBoard: the PNGs as images and the config as hparams
with the final and best-validation metrics."""
import os

import numpy as np

from mnist_jax.config import defaults


def best_record(history):
  """The epoch record with the highest val_accuracy (None without validation)."""
  with_val = [h for h in history if 'val_accuracy' in h]
  return max(with_val, key=lambda h: h['val_accuracy']) if with_val else None


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
    final = history[-1]
    metrics = {f'final/{k}': final[k] for k in ('test_accuracy', 'test_loss',
                                                 'val_accuracy', 'val_loss') if k in final}
    best = best_record(history)
    if best is not None:
      metrics.update({'best/val_accuracy': best['val_accuracy'],
                      'best/test_accuracy': best['test_accuracy']})
    hp = {k: v if isinstance(v, (int, float, str, bool)) else str(v)
          for k, v in defaults.flat(config.to_dict()).items()}
    for summary in hparams(hp, metrics):  # the HParams dashboard
      tb.file_writer.add_summary(summary)
    for key, value in metrics.items():
      tb.add_scalar(key, value, step)
