"""Predicting digits of your own images with a trained run.

  python -m mnist_jax.predict --workdir=DIR [--which=best|latest] a.png b.jpg ...

prints per image the predicted digit and the top-3 probabilities p = softmax(z).

A photo or drawing is turned into an MNIST-like digit the way MNIST was made
(LeCun et al.): ``prepare_image``
  1. grayscale, L = 0.299 R + 0.587 G + 0.114 B (transparent pixels on white);
  2. ink is bright on black: invert (x -> 255 − x) when the median of the
     border pixels (the background) is light (> 127);
  3. background to 0, contrast stretched: x -> 255 · (x − b) / (max − b), b the
     border median;
  4. crop to the ink's bounding box (pixels >= 25 % of the maximum);
  5. resize so the longest side is 20 px, aspect kept, antialiased (area
     averaging: each output pixel is the mean of the input area it covers);
  6. paste into 28x28 so the centre of mass c = Σ p·x / Σ p lies at (14, 14)
     (integer shift; clamped so no ink leaves the frame).
"""
import sys

import functools

import jax
import numpy as np

from mnist_jax import runs, train
from mnist_jax.data import preprocess
from mnist_jax.errors import UserError

SIZE, BOX, CENTRE = 28, 20, 14.0
INK_FRACTION = 0.25


def to_grayscale(array) -> np.ndarray:
  """float (H, W) in 0..255 from (H, W), (H, W, 1|3|4) uint8/float arrays."""
  x = np.asarray(array, np.float64)
  if x.ndim == 3 and x.shape[-1] in (2, 4):          # alpha: composite on white
    alpha = x[..., -1:] / 255.0
    x = x[..., :-1] * alpha + 255.0 * (1 - alpha)
  if x.ndim == 3 and x.shape[-1] == 3:
    x = x @ np.array([0.299, 0.587, 0.114])
  elif x.ndim == 3 and x.shape[-1] == 1:
    x = x[..., 0]
  if x.ndim != 2 or min(x.shape) < 1:
    raise UserError(f'cannot use an image array of shape {np.shape(array)}; pass a '
                    '(H, W) grayscale or (H, W, 3|4) colour image')
  return x


def area_matrix(n_in: int, n_out: int) -> np.ndarray:
  """(n_out, n_in) weights: output i averages input [i·s, (i+1)·s), s = n_in/n_out."""
  edges = np.arange(n_out + 1) * (n_in / n_out)
  lo, hi = edges[:-1, None], edges[1:, None]
  pixels = np.arange(n_in)[None, :]
  overlap = np.clip(np.minimum(hi, pixels + 1) - np.maximum(lo, pixels), 0, None)
  return overlap / overlap.sum(1, keepdims=True)


def resize_area(x: np.ndarray, shape) -> np.ndarray:
  """Antialiased resize of (H, W) to ``shape`` by area averaging."""
  return area_matrix(x.shape[0], shape[0]) @ x @ area_matrix(x.shape[1], shape[1]).T


def centre_of_mass(x: np.ndarray):
  """(row, col) = Σ p·(r, c) / Σ p over the pixels p of (H, W)."""
  total = x.sum()
  rows, cols = np.arange(x.shape[0]), np.arange(x.shape[1])
  return float(x.sum(1) @ rows / total), float(x.sum(0) @ cols / total)


def prepare_image(array) -> np.ndarray:
  """An MNIST-like uint8 (28, 28) digit from any image array (see the module doc)."""
  x = to_grayscale(array)
  border = np.concatenate([x[0], x[-1], x[:, 0], x[:, -1]])
  background = float(np.median(border))
  if background > 127.5:
    x, background = 255.0 - x, 255.0 - background
  x = np.clip(x - background, 0, None)
  if x.max() < 8:   # < 3 % contrast: nothing drawn
    raise UserError('the image is blank (no ink differs from the background); pass '
                    'a picture of one digit, dark on light or light on dark')
  x = x * (255.0 / x.max())
  rows = np.flatnonzero((x >= INK_FRACTION * 255).any(1))
  cols = np.flatnonzero((x >= INK_FRACTION * 255).any(0))
  x = x[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
  h, w = x.shape
  scale = BOX / max(h, w)
  x = resize_area(x, (max(1, round(h * scale)), max(1, round(w * scale))))
  h, w = x.shape
  com_r, com_c = centre_of_mass(x)
  top = int(np.clip(round(CENTRE - com_r), 0, SIZE - h))
  left = int(np.clip(round(CENTRE - com_c), 0, SIZE - w))
  out = np.zeros((SIZE, SIZE))
  out[top:top + h, left:left + w] = x
  return np.clip(np.round(out), 0, 255).astype(np.uint8)


def load_image(path: str) -> np.ndarray:
  """The pixels of an image file (Pillow; EXIF rotation applied) as uint8 (H, W[, C])."""
  from PIL import Image, ImageOps, UnidentifiedImageError  # pylint: disable=g-import-not-at-top
  try:
    with Image.open(path) as image:
      image = ImageOps.exif_transpose(image)
      if image.mode not in ('L', 'LA', 'RGB', 'RGBA'):
        image = image.convert('RGBA' if 'transparency' in image.info or 'A' in image.mode
                              else 'RGB')
      return np.asarray(image)
  except FileNotFoundError:
    raise UserError(f'image {path} not found; check the path') from None
  except (UnidentifiedImageError, OSError, ValueError) as e:
    reason = type(e).__name__ if not str(e) else str(e).splitlines()[0][:120]
    raise UserError(f'cannot read image {path} ({reason}); pass a PNG, JPEG or other '
                    'image file Pillow can open') from None


@functools.partial(jax.jit, static_argnums=2)
def _predict(state, images, standardize):
  return train.predict(state, preprocess.normalize(images, standardize=standardize))


def probabilities(state, images, *, standardize: bool = False,
                  batch_size: int = 1000) -> np.ndarray:
  """softmax(f(x)) (N, K) float32 for uint8 images (N, 28, 28[, 1]) 0..255, in batches."""
  images = np.asarray(images)
  if images.ndim == 3:
    images = images[..., None]
  if images.dtype != np.uint8:
    raise UserError(f'images must be uint8 pixels 0..255, got {images.dtype}; '
                    'pass e.g. data.test_images or prepare_image(...) outputs')
  out = []
  for i in range(0, len(images), batch_size):
    chunk = images[i:i + batch_size]
    pad = -len(chunk) % batch_size if len(images) > batch_size else 0
    padded = np.concatenate([chunk, np.zeros((pad,) + chunk.shape[1:], np.uint8)])
    out.append(np.asarray(_predict(state, padded, standardize))[:len(chunk)])
  return np.concatenate(out) if out else np.zeros((0, state.num_classes), np.float32)


def top_k(probs: np.ndarray, k: int = 3):
  """[(class, probability)] of the ``k`` most likely classes of one prediction."""
  order = np.argsort(-probs)[:k]
  return [(int(c), float(probs[c])) for c in order]


def format_line(path: str, probs: np.ndarray) -> str:
  top = top_k(probs)
  return f'{path}: {top[0][0]}  (' + ', '.join(f'{c}: {p:.3f}' for c, p in top) + ')'


def predict_files(workdir: str, paths, which: str = 'best') -> list:
  """[(path, probabilities (K,))] for image files, with the run's checkpoint."""
  if not paths:
    raise UserError('no image given; pass image files after the flags, e.g. '
                    'python -m mnist_jax.predict --workdir=DIR digit.png')
  digits = []
  for path in paths:
    try:
      digits.append(prepare_image(load_image(path)))
    except UserError as e:
      raise UserError(e if path in str(e) else f'{path}: {e}') from None
  config, state, _ = runs.load_run(workdir, which)
  probs = probabilities(state, np.stack(digits), standardize=config.data.standardize)
  return list(zip(paths, probs))


def main(argv):
  from absl import flags  # pylint: disable=g-import-not-at-top
  fl = flags.FLAGS
  runs.quiet_orbax_logs()
  try:
    results = predict_files(fl.workdir, argv[1:], fl.which)
  except UserError as e:
    print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
    sys.exit(2)
  for path, probs in results:
    print(format_line(path, probs))


def run():
  from absl import app, flags  # pylint: disable=g-import-not-at-top
  flags.DEFINE_string('workdir', None, 'Run directory written by mnist_jax.main.')
  flags.DEFINE_enum('which', 'best', ['best', 'latest'], 'Checkpoint to use.')
  flags.mark_flags_as_required(['workdir'])
  app.run(main)


if __name__ == '__main__':
  run()
