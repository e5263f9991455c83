"""Pictures of a run, as PNG files in ``WORKDIR/plots/`` and in TensorBoard
(drawn here; the commands main, sweep and plots ask for them after training).

  curves.png            loss and accuracy per epoch: train (mean over the epoch's
                        steps), validation and test (metrics.jsonl)
  confusion.png         C[i, j] = #{test digits of class i predicted as j}
  misclassified.png     the wrong test predictions with the highest p(ŷ)
  filters.png           first-layer weights: conv kernels K×K (or, without
                        convolutions, each first Dense unit's 784 weights as 28×28)
  feature_maps*.png     every conv layer's output FM = K ∗ x + b for one test
                        digit (before the activation); 12 layers per file
  augmented.png         training digits and random augmentations (if enabled)
  reliability.png       accuracy against confidence in 15 bins, with ECE and NLL
                        (engine/calibration.py); for an ensemble run its member 0
                        (the single run of the config) beside the ensemble

An ensemble run (engine/ensemble.py) is drawn from the mean of its members'
probabilities (confusion, mistakes, reliability); its layers (filters, feature
maps) are member 0's.

Drawing only: the numbers come from inspection/confusion.py (confusion matrix,
mistakes), inspection/layers.py (layer outputs, captured with flax's
``nn.intercept_methods``; models without convolutions have no feature maps,
logged) and engine/calibration.py; inspection/tensorboard.py adds the PNGs to
TensorBoard. The best-validation epoch is store/selection.py's.
"""
import functools
import os

import jax
import jax.numpy as jnp
import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np
from matplotlib import ticker
from absl import logging

from mnist_jax.data import preprocess
from mnist_jax.engine import calibration, ensemble, evaluation
from mnist_jax.store import selection, workdir as workdir_lib
from mnist_jax.inspection import confusion as confusion_lib, tensorboard as tensorboard_lib
from mnist_jax.inspection.layers import MAX_MAPS, capture_layers, layer_names, layer_params

LAYERS_PER_PAGE = 12


def _save(fig, path):
  fig.savefig(path, dpi=90, bbox_inches='tight')
  plt.close(fig)
  return path


def curves(history, path, name=''):
  """Loss and accuracy per epoch for train / val / test (``name``: the run's)."""
  fig, axes = plt.subplots(1, 2, figsize=(11, 4))
  epochs = [h['epoch'] for h in history]
  for ax, metric in zip(axes, ('loss', 'accuracy')):
    for split, style in (('train', 'o-'), ('val', 's--'), ('test', '^-')):
      key = f'{split}_{metric}'
      if any(key in h for h in history):
        ax.plot(epochs, [h.get(key, np.nan) for h in history], style, label=split)
    chosen = selection.best(history)
    if chosen:
      best = chosen['epoch']
      ax.axvline(best, color='gray', lw=0.8, ls=':', label=f'best val (epoch {best})')
    ax.set(xlabel='epoch', ylabel=metric, title=f'{metric} per epoch')
    ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend()
  axes[0].set_yscale('log')
  axes[0].yaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 3.0, 5.0)))
  axes[0].yaxis.set_major_formatter(ticker.FormatStrFormatter('%g'))
  axes[0].yaxis.set_minor_formatter(ticker.NullFormatter())
  fig.suptitle(f'{name}{": " if name else ""}train = mean over the epoch\'s steps, '
               'val/test = after the epoch', y=1.02)
  return _save(fig, path)


def confusion(matrix, path):
  n = matrix.shape[0]
  fig, ax = plt.subplots(figsize=(6.5, 5.5))
  im = ax.imshow(np.log1p(matrix), cmap='Blues')
  for i in range(n):
    for j in range(n):
      if matrix[i, j]:
        ax.text(j, i, matrix[i, j], ha='center', va='center', fontsize=8,
                color='white' if i == j else 'black')
  acc = np.trace(matrix) / max(1, matrix.sum())
  ax.set(xticks=range(n), yticks=range(n), xlabel='predicted digit', ylabel='true digit',
         title=f'Test confusion matrix\n{matrix.sum():,} digits, accuracy {acc:.2%}')
  fig.colorbar(im, ax=ax, label='log(1 + count)')
  return _save(fig, path)


def _mosaic(tiles, cols, gap=(1, 1)):
  """The (N, h, w) ``tiles`` on one canvas, ``cols`` to a row, NaN (drawn as the
  background) in the (rows, columns) ``gap`` between them; with ``_tile_box`` the
  corners of tile k. One image in one axes draws many times faster than one axes
  per tile, and looks the same."""
  n, h, w = tiles.shape
  rows = -(-n // cols)
  canvas = np.full((rows * (h + gap[0]) - gap[0], cols * (w + gap[1]) - gap[1]), np.nan)
  for k, tile in enumerate(tiles):
    top, left = _tile_box(k, cols, (h, w), gap)
    canvas[top:top + h, left:left + w] = tile
  return canvas


def _tile_box(k, cols, shape, gap):
  """(top, left) pixel of tile k on ``_mosaic``'s canvas."""
  r, c = divmod(k, cols)
  return r * (shape[0] + gap[0]), c * (shape[1] + gap[1])


def _scaled(maps):
  """Each map divided by its own max |value| (an all-zero map stays 0): diverging
  colours centred on 0 for maps of different ranges."""
  lim = np.abs(maps).max(axis=(1, 2), keepdims=True)
  return maps / np.where(lim > 0, lim, 1.0)


def _gallery(ax, tiles, cols, cmap, vmin, vmax, gap=(1, 1)):
  """``tiles`` as ``_mosaic`` in ``ax`` (no axis lines); the (y, x) data position
  above the middle of each tile, for its label."""
  canvas = _mosaic(np.asarray(tiles, np.float32), cols, gap)
  ax.imshow(canvas, cmap=plt.get_cmap(cmap).with_extremes(bad='white'), vmin=vmin,
            vmax=vmax, interpolation='nearest')
  ax.axis('off')
  shape = tiles.shape[1:3]
  return [(top - 0.8, left + (shape[1] - 1) / 2) for top, left in
          (_tile_box(k, cols, shape, gap) for k in range(len(tiles)))]


def misclassified(images, labels, probs, path, count=24):
  """A gallery of ``mistakes``: image, true label, prediction and its p(ŷ)."""
  preds = probs.argmax(-1)
  wrong = confusion_lib.mistakes(labels, probs, count)
  cols = 8
  rows = max(1, -(-len(wrong) // cols))
  fig, ax = plt.subplots(figsize=(cols * 1.4, rows * 1.6 + 0.4))
  if len(wrong):
    tiles = np.asarray(images)[wrong].reshape(len(wrong), 28, 28)
    at = _gallery(ax, tiles, min(cols, len(wrong)), 'gray_r', 0, 255, gap=(12, 6))
    for (y, x), i in zip(at, wrong):
      ax.text(x, y, f'true {labels[i]} → {preds[i]}\np={probs[i, preds[i]]:.2f}',
              fontsize=8, ha='center', va='bottom')
  else:
    ax.axis('off')
  fig.suptitle(f'Most confident mistakes on test ({len(np.flatnonzero(preds != labels))} '
               'wrong in all)' if len(wrong) else 'No misclassified test digits')
  return _save(fig, path)


def filters(state, path):
  """First-layer weights: conv kernels, or Dense units as 28×28 templates."""
  name, kind = layer_names(state)[0]
  kernel = layer_params(state, name)
  if kind == 'conv':
    maps = np.moveaxis(kernel[:, :, 0, :], -1, 0)          # (F, K, K), input channel 0
    what = f'{name}: {maps.shape[0]} conv filters {maps.shape[1]}×{maps.shape[2]}'
  else:
    maps = kernel.T.reshape(-1, 28, 28)                     # (units, 28, 28)
    what = f'{name}: weights of each of {maps.shape[0]} units on the 28×28 pixels'
  if len(maps) > 64:
    what += ' (the first 64)'
    maps = maps[:64]
  cols = min(len(maps), 8 if len(maps) > 10 else len(maps))
  rows = -(-len(maps) // cols)
  fig, ax = plt.subplots(figsize=(cols * 1.2, rows * 1.2 + 0.6))
  size = maps.shape[1]
  gap = (max(1, round(size * 0.4)), max(1, round(size * 0.2)))
  for k, (y, x) in enumerate(_gallery(ax, _scaled(maps), cols, 'RdBu_r', -1, 1, gap)):
    ax.text(x, y, str(k), fontsize=7, ha='center', va='bottom')
  fig.suptitle(f'First layer, {what}\n(red > 0 > blue, each scaled to its own range)',
               fontsize=9)
  return _save(fig, path)


def feature_maps(state, image, label, prefix) -> list:
  """One PNG per 12 conv layers: up to 16 output maps of each for the uint8 ``image``
  (each layer one row, each map scaled to its own range)."""
  layers = [(n, o[0]) for n, _, o in capture_layers(state, image[None], ('conv',))]
  if not layers:
    logging.info('No feature maps: model %s has no conv layer.', type(state.model).__name__)
    return []
  paths = []
  for page in range(0, len(layers), LAYERS_PER_PAGE):
    chunk = layers[page:page + LAYERS_PER_PAGE]
    cols = min(MAX_MAPS, max(o.shape[-1] for _, o in chunk))
    fig, axes = plt.subplots(len(chunk) + 1, 1, squeeze=False,
                             figsize=((cols + 1) * 0.9, len(chunk) * 1.0 + 1.6))
    axes = axes[:, 0]
    rows = [('input', 'gray_r', 0, 255, np.asarray(image, np.float32).reshape(1, 28, 28))]
    rows += [(f'{name}\n{"×".join(map(str, out.shape))}', 'RdBu_r', -1, 1,
              _scaled(np.moveaxis(out[..., :MAX_MAPS], -1, 0))) for name, out in chunk]
    for ax, (text, cmap, vmin, vmax, maps) in zip(axes, rows):
      padded = np.full((cols,) + maps.shape[1:], np.nan)   # the same slots in every row
      padded[:len(maps)] = maps
      _gallery(ax, padded, cols, cmap, vmin, vmax, gap=(1, max(1, round(maps.shape[2] * 0.15))))
      ax.text(-0.02, 0.5, text, fontsize=7, ha='right', va='center', transform=ax.transAxes)
    number = page // LAYERS_PER_PAGE + 1
    total = -(-len(layers) // LAYERS_PER_PAGE)
    fig.suptitle(f'Conv outputs for a test "{label}" (before the activation; red > 0 > '
                 f'blue), first {MAX_MAPS} maps per layer — page {number}/{total}', fontsize=9)
    paths.append(_save(fig, f'{prefix}{"" if number == 1 else f"_{number}"}.png'))
  return paths


def augmented(state, images, path, seed=0, copies=4):
  """Row 0: training digits x = p/255; rows 1..copies: the state's augmentation of them."""
  x = preprocess.normalize(jnp.asarray(images))
  # one compiled program for every copy (op by op, each copy's ops would run alone)
  prepare = jax.jit(functools.partial(preprocess.prepare, augment=state.augment))
  rows = [np.asarray(x)] + [np.asarray(prepare(x, jax.random.key(seed + i)))
                            for i in range(copies)]
  tiles = np.concatenate(rows).reshape(-1, 28, 28)
  fig, ax = plt.subplots(figsize=(len(x) * 1.0, len(rows) * 1.0 + 0.5))
  gap = (3, 3)
  _gallery(ax, tiles, len(x), 'gray_r', 0, 1, gap)
  for r in range(len(rows)):                  # each row's name left of its first tile
    top, _ = _tile_box(r * len(x), len(x), (28, 28), gap)
    ax.text(-2, top + 13.5, 'original' if r == 0 else f'augmented {r}', fontsize=8,
            ha='right', va='center')
  fig.suptitle('Training augmentation (config.augment)')
  return _save(fig, path)


def reliability(panels, labels, path, bins=calibration.BINS):
  """Reliability diagrams side by side: per panel (title, probabilities (N, C)),
  accuracy per equal-width confidence bin against the diagonal (perfect
  calibration), the gap to the bin's mean confidence hatched (above the bar:
  overconfident, inside it: underconfident), the share of examples per bin below."""
  fig, axes = plt.subplots(2, len(panels), figsize=(4.6 * len(panels), 5.6), squeeze=False,
                           gridspec_kw={'height_ratios': (3, 1)}, sharex=True)
  for (title, probs), top, bottom in zip(panels, axes[0], axes[1]):
    r = calibration.reliability(probs, labels, bins)
    m = calibration.metrics(probs, labels)
    lo, width = r['edges'][:-1], 1.0 / bins
    full = r['count'] > 0
    top.bar(lo[full], r['accuracy'][full], width, align='edge', color='tab:blue',
            edgecolor='white', label='accuracy')
    acc, conf = r['accuracy'][full], r['confidence'][full]
    top.bar(lo[full], np.abs(conf - acc), width, bottom=np.minimum(acc, conf), align='edge',
            facecolor=(0.84, 0.15, 0.16, 0.25), edgecolor='tab:red', hatch='//', lw=0.5,
            label='gap |accuracy − confidence|')
    top.plot([0, 1], [0, 1], 'k--', lw=0.8, label='perfect calibration')
    top.set(ylim=(0, 1), ylabel='accuracy',
            title=f"{title}\nacc {m['accuracy']:.2%}  ECE {m['ece']:.4f}  NLL {m['nll']:.4f}")
    top.legend(loc='upper left', fontsize=8)
    bottom.bar(lo, r['count'] / max(1, r['count'].sum()), width, align='edge',
               color='gray')
    bottom.set(xlim=(0, 1), yscale='log', xlabel='confidence max p', ylabel='share')
  fig.suptitle(f'Reliability on test ({len(labels):,} digits, {bins} bins)', y=1.0)
  fig.tight_layout()
  return _save(fig, path)


def write_all(workdir, config, state, data, *, tensorboard=True) -> list:
  """All plots of the run into ``workdir/plots`` (and TensorBoard); their paths.
  ``state``: a TrainState, or an ensemble.Ensemble."""
  if jax.process_index() != 0:
    return []
  out = os.path.join(workdir, 'plots')
  os.makedirs(out, exist_ok=True)
  history = workdir_lib.load_history(workdir)
  paths = ([curves(history, os.path.join(out, 'curves.png'), config.model.name)]
           if history else [])
  members = evaluation.predict_members(state, data.test_images,
                                            batch_size=config.eval_batch_size)
  probs = ensemble.combine(members)
  panels = [(config.model.name, probs)]
  if isinstance(state, ensemble.Ensemble):
    panels = [(f'{config.model.name}: member 0 (seed {config.seed})', members[0]),
              (f'ensemble of {len(members)} (mean of probabilities)', probs)]
    state = state.member(0)   # its layers: filters, feature maps
  paths.append(confusion(confusion_lib.confusion_matrix(data.test_labels, probs.argmax(-1),
                                          probs.shape[-1]), os.path.join(out, 'confusion.png')))
  paths.append(misclassified(data.test_images, data.test_labels, probs,
                             os.path.join(out, 'misclassified.png')))
  paths.append(filters(state, os.path.join(out, 'filters.png')))
  paths += feature_maps(state, data.test_images[0], data.test_labels[0],
                        os.path.join(out, 'feature_maps'))
  if state.augment:
    paths.append(augmented(state, data.train_images[:8], os.path.join(out, 'augmented.png'),
                           config.seed))
  else:
    logging.info('No augmentation plot: config.augment is off.')
  paths.append(reliability(panels, data.test_labels, os.path.join(out, 'reliability.png')))
  if tensorboard:
    tensorboard_lib.write_tensorboard(workdir, paths, config, history)
  return paths
