"""Evaluation and batch prediction on device: one compiled function per batch size.

Over a split of N examples, for each of the K models of a group (K = 1: a run):
  loss     = (1/N) Σ_i ℓ(f(x_i; w), onehot(y_i))      (the run's config.loss, no penalty)
  accuracy = (1/N) Σ_i 1[argmax_k f(x_i; w)_k = y_i]
The split is padded to a multiple of the batch size with mask 0 on the padding,
so every example counts exactly once; it is cut into batches on the host once
(no slicing op runs, or compiles, on the devices at evaluation time), and the
per-batch sums are fetched once and added in order.

An ensemble (engine/ensemble.py, a run with config.ensemble.size > 1) predicts
the mean of its members' probabilities; its loss is then the NLL of that mean.
``calibration`` adds NLL and ECE (engine/calibration.py) of a model or an
ensemble, with its weight EMA where it has one. ``make_eval_fn`` jits one batch (not a scan over
batches): one compilation serves every split, and XLA:CPU's convolutions run
outside a while loop (docs/speed.md).
"""
import functools

import jax
import numpy as np

from mnist_jax import parallel, train
from mnist_jax.engine import calibration as calibration_lib, ensemble, rundir
from mnist_jax.errors import UserError


def padded_split(images, labels, batch_size, mesh) -> list:
  """[(images, labels, mask) of each batch of ``batch_size``] on the devices: the
  split padded to a multiple of batch_size, mask 0 on the padding."""
  n = len(labels)
  pad = -n % batch_size
  mask = np.concatenate([np.ones(n, np.float32), np.zeros(pad, np.float32)])
  images = np.concatenate([images, np.zeros((pad,) + images.shape[1:], images.dtype)])
  labels = np.concatenate([labels, np.zeros(pad, labels.dtype)])
  return parallel.replicate([(images[i:i + batch_size], labels[i:i + batch_size],
                              mask[i:i + batch_size]) for i in range(0, n + pad, batch_size)],
                            mesh)


def make_eval_fn(mesh, eval_step=train.eval_step):
  """jit(eval_step) on one padded batch (of ``padded_split``), sharded over ``mesh``."""
  sharding = parallel.batch_sharded(mesh)

  @jax.jit
  def run(state, images, labels, mask):
    batch = jax.lax.with_sharding_constraint(
        {'image': images, 'label': labels, 'mask': mask}, sharding)
    return eval_step(state, batch)

  return run


def evaluate(state, split, eval_fn) -> dict:
  """{'loss', 'accuracy'} means over the batches of a ``padded_split`` (numpy;
  shape (K,) for a group's eval_step, scalars for train.eval_step)."""
  parts = jax.device_get([eval_fn(state, *batch) for batch in split])
  sums = jax.tree_util.tree_map(lambda *v: functools.reduce(np.add, v), *parts)
  return {'loss': sums['loss'] / sums['count'], 'accuracy': sums['correct'] / sums['count']}


def metrics(state, images, labels, *, batch_size: int = 1000) -> dict:
  """{'loss', 'accuracy', 'count'} of one state (or an Ensemble: loss = NLL of its
  mean probabilities) on ``images`` (N, 28, 28, 1) uint8 and ``labels``, over all
  local devices."""
  n = len(labels)
  if n == 0:
    return {'loss': float('nan'), 'accuracy': float('nan'), 'count': 0}
  if isinstance(state, ensemble.Ensemble):
    m = calibration_lib.metrics(probabilities(state, images, batch_size=batch_size), labels)
    return {'loss': m['nll'], 'accuracy': m['accuracy'], 'count': n}
  mesh = parallel.make_mesh()
  size = min(batch_size, n)
  size += -size % mesh.devices.size
  split = padded_split(images, labels, size, mesh)
  out = evaluate(parallel.replicate(state, mesh), split, make_eval_fn(mesh))
  return {'loss': float(out['loss']), 'accuracy': float(out['accuracy']), 'count': n}


@jax.jit
def _predict(state, images):
  return train.predict(state, images)


def probabilities(state, images, *, batch_size: int = 1000) -> np.ndarray:
  """softmax(f(x)) (N, K) float32 for images (N, 28, 28[, 1]): uint8 pixels 0..255
  or floats x in [0, 1]; in padded batches (one compilation), preprocessed as the
  state was trained. An Ensemble gives the mean of its members' probabilities."""
  return _probabilities(state, images, batch_size)[0]


def member_probabilities(state, images, *, batch_size: int = 1000) -> np.ndarray:
  """(M, N, K): each member's probabilities (M = 1 for a single model)."""
  return _probabilities(state, images, batch_size)[1]


def _probabilities(state, images, batch_size):
  """(mean probabilities (N, K), member probabilities (M, N, K)), inputs checked."""
  images = np.asarray(images)
  if images.ndim == 3:
    images = images[..., None]
  floats = np.issubdtype(images.dtype, np.floating)
  if not (images.dtype == np.uint8 or floats) or (
      floats and images.size and not 0 <= images.min() <= images.max() <= 1):
    raise UserError(f'images must be uint8 pixels 0..255 or floats in [0, 1], got '
                    f'{images.dtype} in [{images.min()}, {images.max()}]; pass e.g. '
                    'data.test_images or prepare_image(...) outputs')
  if isinstance(state, ensemble.Ensemble):
    members = ensemble.member_probabilities(state, images, batch_size=batch_size)
    return ensemble.combine(members), members
  probs = _single(state, images, batch_size)
  return probs, probs[None]


def _single(state, images, batch_size):
  out = [np.asarray(_predict(state, x))[:n]
         for x, n in ensemble.padded_batches(images, batch_size)]
  if out:
    return np.concatenate(out)
  classes = jax.eval_shape(train.predict, state, np.zeros((1,) + images.shape[1:],
                                                          np.uint8)).shape[-1]
  return np.zeros((0, classes), np.float32)   # no images: (0, K), K from the model


def calibration(state, splits, batch_size: int = 1000) -> dict:
  """'{split}_nll', '{split}_ece' (and '{split}_accuracy_ema', '_nll_ema', '_ece_ema'
  with a weight EMA) of a model or Ensemble on ``splits`` {name: (images, labels)}."""
  out = {}
  has_ema = bool(state.ema)
  variants = [('', state)] + ([('_ema', ema_weights(state))] if has_ema else [])
  for split, (images, labels) in splits.items():
    if not len(labels):
      continue
    for tail, s in variants:
      m = calibration_lib.metrics(probabilities(s, images, batch_size=batch_size), labels)
      out.update({f'{split}_nll{tail}': m['nll'], f'{split}_ece{tail}': m['ece']})
      if tail:
        out[f'{split}_accuracy{tail}'] = m['accuracy']
  return out


def ema_weights(state):
  """A model's or an Ensemble's EMA weights in place of the raw ones."""
  if isinstance(state, ensemble.Ensemble):
    return state.with_ema()
  return train.ema_state(state)


def split_metrics(state, images, labels, *, batch_size: int = 1000) -> dict:
  """{'loss', 'accuracy', 'count', 'nll', 'ece'} of a model or an Ensemble (then
  also 'member_accuracy', one per member) on one split."""
  mean, members = _probabilities(state, images, batch_size)
  cal = calibration_lib.metrics(mean, labels)
  if isinstance(state, ensemble.Ensemble):
    out = {'loss': cal['nll'], 'accuracy': cal['accuracy'], 'count': len(labels),
           'member_accuracy': [float(np.mean(m.argmax(-1) == labels)) for m in members]}
  else:
    out = metrics(state, images, labels, batch_size=batch_size)
  return {**out, 'nll': cal['nll'], 'ece': cal['ece']}


def checkpoint_metrics(workdir: str, which: str = 'best', data_dir=None) -> dict:
  """Val and test metrics of the ``which`` checkpoint of ``workdir``:
  {'workdir', 'which', 'epoch', 'val': {...}, 'test': {...}} (and 'val_ema',
  'test_ema' for the weight EMA; an ensemble run's are the ensemble's)."""
  config = rundir.load_config(workdir)
  data = rundir.load_data(config, data_dir)
  _, state, meta = rundir.load_run(workdir, which, num_classes=data.num_classes)
  result = {'workdir': workdir, 'which': which, 'epoch': meta['epoch']}
  if isinstance(state, ensemble.Ensemble):
    result['ensemble_size'] = state.size
  variants = [('', state)] + ([('_ema', ema_weights(state))] if state.ema else [])
  for tail, s in variants:
    for split, images, labels in (('val', data.val_images, data.val_labels),
                                  ('test', data.test_images, data.test_labels)):
      if len(labels):
        result[split + tail] = split_metrics(s, images, labels,
                                             batch_size=config.eval_batch_size)
  return result


def format_line(result: dict) -> str:
  parts = [f"{split} loss {result[split]['loss']:.4f} accuracy {result[split]['accuracy']:.4f}"
           + (f" ECE {result[split]['ece']:.4f}" if 'ece' in result[split] else '')
           + f" ({result[split]['count']} images)"
           for split in ('val', 'test', 'val_ema', 'test_ema') if split in result]
  what = (f"ensemble of {result['ensemble_size']}, " if 'ensemble_size' in result else '')
  return f"{result['which']} checkpoint ({what}epoch {result['epoch']}): " + ' | '.join(parts)
