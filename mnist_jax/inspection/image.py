"""Your own images as 28x28 inputs of a run: MNIST-like digits, or any greyscale item.

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
Steps 5-6 are MNIST's digit steps: they run with ``digits=True``, for runs on the
MNIST family (the run records it, data/describe.py). Otherwise 5-6 are
  5'. resize so the longest side is 28 px, aspect kept, antialiased;
  6'. paste into 28x28 with the box centred (as Fashion-MNIST was made: trimmed,
      longest side resized to 28, centred).
``preparation_steps`` returns the image after each step (the serve page shows them).
"""
import numpy as np

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


def preparation_steps(array, digits: bool = True) -> list:
  """[(step, float (H, W) image 0..255)] of ``prepare_image`` in order: 'grayscale',
  'ink bright' (inverted when the background is light), 'stretched', 'cropped',
  'resized' (20 px box; 28 px without ``digits``) and 'centred' (by the centre of
  mass; by the box without ``digits``): the 28x28 input, before rounding."""
  x = to_grayscale(array)
  steps = [('grayscale', x)]
  border = np.concatenate([x[0], x[-1], x[:, 0], x[:, -1]])
  background = float(np.median(border))
  if background > 127.5:
    x, background = 255.0 - x, 255.0 - background
  steps.append(('ink bright', x))
  x = np.clip(x - background, 0, None)
  if x.max() < 8:   # < 3 % contrast: nothing drawn
    raise UserError('the image is blank (no ink differs from the background); pass '
                    'a picture of one digit, dark on light or light on dark')
  x = x * (255.0 / x.max())
  steps.append(('stretched', x))
  rows = np.flatnonzero((x >= INK_FRACTION * 255).any(1))
  cols = np.flatnonzero((x >= INK_FRACTION * 255).any(0))
  x = x[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
  steps.append(('cropped', x))
  h, w = x.shape
  scale = (BOX if digits else SIZE) / max(h, w)
  x = resize_area(x, (max(1, round(h * scale)), max(1, round(w * scale))))
  steps.append(('resized', x))
  h, w = x.shape
  if digits:
    com_r, com_c = centre_of_mass(x)
    top = int(np.clip(round(CENTRE - com_r), 0, SIZE - h))
    left = int(np.clip(round(CENTRE - com_c), 0, SIZE - w))
  else:
    top, left = (SIZE - h) // 2, (SIZE - w) // 2
  out = np.zeros((SIZE, SIZE))
  out[top:top + h, left:left + w] = x
  steps.append(('centred', out))
  return steps


def prepare_image(array, digits: bool = True) -> np.ndarray:
  """A uint8 (28, 28) input from any image array: an MNIST-like digit, or without
  ``digits`` the item fitted to 28 px and centred (see the module doc)."""
  return np.clip(np.round(preparation_steps(array, digits)[-1][1]), 0,
                 255).astype(np.uint8)


def load_image(path, name=None) -> np.ndarray:
  """The pixels of an image file (Pillow; EXIF rotation applied) as uint8 (H, W[, C]);
  ``path`` may be a file object (then ``name`` names it in errors)."""
  from PIL import Image, ImageOps, UnidentifiedImageError  # pylint: disable=g-import-not-at-top
  try:
    with Image.open(path) as image:
      image = ImageOps.exif_transpose(image)
      if image.mode not in ('L', 'LA', 'RGB', 'RGBA'):
        image = image.convert('RGBA' if 'transparency' in image.info or 'A' in image.mode
                              else 'RGB')
      return np.asarray(image)
  except FileNotFoundError:
    raise UserError(f'image {name or path} not found; check the path') from None
  except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
    reason = type(e).__name__ if not str(e) else str(e).splitlines()[0][:120]
    if isinstance(e, UnidentifiedImageError):   # its text repeats the path or <BytesIO ...>
      reason = 'not an image format Pillow knows'
    raise UserError(f'cannot read image {name or path} ({reason}); pass a PNG, JPEG or other '
                    'image file Pillow can open') from None
