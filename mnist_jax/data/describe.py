"""What a run records about its data, read from the data it trains on.

A run's ``config.data`` holds, besides where the data comes from, what the data
is; ``resolve`` fills each of these that is None from the loaded ``Dataset``,
before anything is trained, so that config.json records them and everything
that reads the run back (predict, the serve page, api, plots) uses them:

  mean, std     μ = (1/(N·P)) Σ_n Σ_p x_np and σ = sqrt((1/(N·P)) Σ x_np² − μ²),
                x = p/255 over the N images × P = 784 pixels of the run's own
                training split (after val_size and train_limit); standardize uses them
  num_classes   K: the dataset's (TFDS info, or 1 + the largest IDX label)
  label_names   the K class names (TFDS's, else '0', '1', ...)
  digits        whether inputs are MNIST-style digits, so a user's picture gets the
                digit steps of inspection/image.py (20 px box, centre of mass):
                True for the MNIST family (``DIGIT_SETS``), False otherwise
  num_train     N, the training images (sizes the learning-rate schedule)

For MNIST the training split's μ, σ are, to 4 places, the published 0.1307, 0.3081 on all
60,000 images; the 55,000 left after val_size = 5,000 give 0.13072 and 0.30820
(σ differs from the constant by 9·10⁻⁵, 0.03 %).
"""
import numpy as np

from mnist_jax.errors import UserError

DIGIT_SETS = ('mnist', 'emnist')
KEYS = ('mean', 'std', 'num_classes', 'label_names', 'digits', 'num_train')


def pixel_stats(images) -> tuple:
  """(μ, σ) of x = p/255 over every pixel of uint8 ``images``, from exact integer sums."""
  p = np.asarray(images).reshape(-1)
  if not p.size:
    raise UserError('the training split has no images; lower config.data.val_size or '
                    'raise config.data.train_limit')
  if p.dtype != np.uint8:
    raise ValueError(f'pixel_stats takes uint8 pixels, not {p.dtype}')
  # Σp in uint64 and Σp² through uint16 (255² fits): exact, without an int64 copy
  # of the split (8 bytes a pixel, 345 MB for MNIST's 55,000 training images)
  n = p.size
  s1 = int(p.sum(dtype=np.uint64))
  s2 = int(np.square(p.astype(np.uint16), dtype=np.uint16).sum(dtype=np.uint64))
  mean = s1 / (255.0 * n)
  var = max(0.0, s2 / (255.0 ** 2 * n) - mean * mean)
  return float(mean), float(np.sqrt(var))


def is_digits(name: str) -> bool:
  """Whether the dataset ``name`` holds MNIST-style centred digits."""
  return name in DIGIT_SETS


def resolve(config, data):
  """A copy of ``config`` whose data keys above that are None come from ``data``
  (a pipeline.Dataset); UserError when a set num_classes cannot hold the labels."""
  found = 1 + max(int(y.max()) for y in (data.train_labels, data.val_labels,
                                         data.test_labels, np.zeros(1, np.int64)) if len(y))
  config = config.copy_and_resolve_references()
  d = config.data
  if d.num_classes is not None and d.num_classes < max(found, 1):
    raise UserError(f'config.data.num_classes={d.num_classes} cannot hold the labels '
                    f'0..{found - 1} of {d.name!r}; leave it unset (None) or set it to at '
                    f'least {found}')
  num_classes = d.num_classes or max(data.num_classes, found)
  names = tuple(data.label_names) if len(data.label_names) == num_classes else tuple(
      str(k) for k in range(num_classes))
  mean, std = (d.mean, d.std) if d.mean is not None and d.std is not None else \
      pixel_stats(data.train_images)
  values = {'mean': mean, 'std': std, 'num_classes': num_classes, 'label_names': names,
            'digits': is_digits(d.name), 'num_train': len(data.train_labels)}
  for key, value in values.items():
    if d[key] is None or key not in ('label_names', 'digits'):
      d[key] = value
  if d.label_names is not None and len(d.label_names) != num_classes:
    raise UserError(f'config.data.label_names has {len(d.label_names)} names for '
                    f'{num_classes} classes; give one name per class or leave it unset')
  return config
