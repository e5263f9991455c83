"""What summary.json says about a finished run.

  the last epoch's validation and test metrics   (raw weights; '_ema': the weight EMA)
  e* = selection.best(history)                    the one best-epoch rule
  at e*: the model's weights' (config.model_weights) val and test figures,
         and the full record under 'at_best_val'
  speed, devices, versions, the preprocessing and the config

The test figures come from one reading of the test split at the end (the
trainer's), for the last weights and for e*'s.
"""
import json

import jax
import numpy as np

from mnist_jax.store import selection


def summarize(config, history, num_params, mesh, wall_s, *, test_last=None,
              test_best=None) -> dict:
  """The contents of summary.json: the last epoch's validation and test metrics
  (raw weights; '_ema' the weight EMA), e* = selection.best and the model's
  (config.model_weights) figures there, the full record at e* under
  'at_best_val', speed and config. ``test_last``/``test_best``: the test
  records of the last and the e* weights (default: those in ``history``)."""
  weights = config.model_weights
  final = history[-1]
  best = selection.best(history, weights) or final
  test_last = {k: v for k, v in final.items() if k.startswith('test_')} \
      if test_last is None else test_last
  test_best = {k: v for k, v in best.items() if k.startswith('test_')} \
      if test_best is None else test_best
  tail = '_ema' if weights == 'ema' else ''
  own = lambda r: {k: v for k, v in r.items() if k.startswith(('val_', 'test_'))}
  rates = [h['images_per_s'] for h in history[1:]] or [final['images_per_s']]
  at_best = {'epoch': best['epoch'], **own(best), **own(test_best)}
  return {
      **own(final), **own(test_last),
      'model_weights': weights,
      'best_epoch': best['epoch'], 'best_val_accuracy': selection.score(best, weights),
      'test_accuracy_at_best_val': at_best.get(f'test_accuracy{tail}'),
      'test_loss_at_best_val': at_best.get(f'test_loss{tail}'),
      'at_best_val': at_best,
      'epochs': final['epoch'],
      'train_time_s': sum(h['train_time_s'] for h in history),
      'wall_time_s': wall_s,
      'images_per_s': float(np.median(rates)),
      'num_params': num_params,
      'devices': f'{mesh.devices.size} x {mesh.devices.flat[0].device_kind}',
      'jax_version': jax.__version__,
      'preprocessing': {'normalize': 'x = p / 255', 'augment': dict(config.augment),
                        'standardize': bool(config.data.standardize)},
      'config': json.loads(config.to_json_best_effort()),
  }
