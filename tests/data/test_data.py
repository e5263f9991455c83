"""Data layer: IDX parser, train/val/test splits, normalize and one-hot (the TFDS source:
tests/data/test_tfds.py; the download of MNIST: tests/data/test_download.py)."""
import dataclasses
import gzip
import os
import shutil

import jax.numpy as jnp
import numpy as np
import pytest

from mnist_jax.config import defaults
from mnist_jax.data import idx
from mnist_jax.data import pipeline
from mnist_jax.data import preprocess
from mnist_jax.data import describe
from mnist_jax.errors import UserError

# The first labels of the real MNIST files.
FIRST_TRAIN_LABELS = [5, 0, 4, 1, 9, 2, 1, 3, 1, 4, 3, 5]
FIRST_TEST_LABELS = [7, 2, 1, 0, 4, 1, 4, 9, 5, 9, 0, 6]


def _random_split(n, seed=0):
  rng = np.random.default_rng(seed)
  return (rng.integers(0, 256, (n, 28, 28, 1), dtype=np.uint8),
          rng.integers(0, 10, (n,)).astype(np.int32))


def _keys(images, labels):
  """Sorted (image bytes + label) records: equal iff same examples, any order."""
  flat = np.concatenate([images.reshape(len(images), -1),
                         labels.astype(np.uint8)[:, None]], axis=1)
  return sorted(row.tobytes() for row in flat)


# --- IDX parser -----------------------------------------------------------------

def test_fixture_is_real_mnist(mnist_small_dir):
  x, y = idx.load_split(mnist_small_dir, 'train')
  tx, ty = idx.load_split(mnist_small_dir, 'test')
  assert x.shape == (5000, 28, 28, 1) and x.dtype == np.uint8
  assert y.shape == (5000,) and y.dtype == np.int32
  assert tx.shape == (1000, 28, 28, 1) and ty.shape == (1000,)
  assert list(y[:12]) == FIRST_TRAIN_LABELS
  assert list(ty[:12]) == FIRST_TEST_LABELS
  assert set(np.unique(y)) == set(range(10)) and set(np.unique(ty)) == set(range(10))
  assert x.min() == 0 and x.max() == 255
  assert 0.10 < x.mean() / 255 < 0.16  # MNIST's mean pixel is 0.1307


@pytest.mark.parametrize('compress', [True, False])
def test_write_read_round_trip(tmp_path, compress):
  images, labels = _random_split(37)
  paths = idx.write_split(str(tmp_path), 'test', images, labels, compress=compress)
  assert all(p.endswith('.gz') == compress for p in paths)
  x, y = idx.load_split(str(tmp_path), 'test')
  np.testing.assert_array_equal(x, images)
  np.testing.assert_array_equal(y, labels)


def test_gzip_detected_by_magic_bytes_not_name(tmp_path, mnist_small_dir):
  src = os.path.join(mnist_small_dir, 't10k-labels-idx1-ubyte.gz')
  shutil.copy(src, tmp_path / 'gz-without-suffix')
  (tmp_path / 'raw.gz').write_bytes(gzip.decompress(open(src, 'rb').read()))
  a = idx.read_labels(str(tmp_path / 'gz-without-suffix'))
  b = idx.read_labels(str(tmp_path / 'raw.gz'))
  assert list(a[:12]) == FIRST_TEST_LABELS
  np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize('compress', [True, False])
def test_truncated_file_says_redownload(tmp_path, compress):
  image_path, _ = idx.write_split(str(tmp_path), 'train', *_random_split(20),
                                  compress=compress)
  data = open(image_path, 'rb').read()
  open(image_path, 'wb').write(data[:len(data) // 2])
  with pytest.raises(UserError, match='truncated') as e:
    idx.load_split(str(tmp_path), 'train')
  assert image_path in str(e.value) and 'download it again' in str(e.value)


def test_wrong_magic(tmp_path):
  image_path, label_path = idx.write_split(str(tmp_path), 'train', *_random_split(5))
  shutil.copy(label_path, image_path)  # a label file where the images should be
  with pytest.raises(UserError, match='not an IDX image file.*0x00000801'):
    idx.load_split(str(tmp_path), 'train')


def test_wrong_image_size(tmp_path):
  path = tmp_path / 'img'
  header = b''.join(v.to_bytes(4, 'big') for v in (idx.IMAGE_MAGIC, 2, 32, 32))
  path.write_bytes(header + bytes(2 * 32 * 32))
  with pytest.raises(UserError, match='32x32 images, not 28x28'):
    idx.read_images(str(path))


def test_mismatched_counts(tmp_path):
  idx.write_split(str(tmp_path / 'a'), 'train', *_random_split(10))
  _, nine_labels = idx.write_split(str(tmp_path / 'b'), 'train', *_random_split(9))
  shutil.copy(nine_labels, tmp_path / 'a' / 'train-labels-idx1-ubyte.gz')
  with pytest.raises(UserError, match='10 images but .* 9 labels'):
    idx.load_split(str(tmp_path / 'a'), 'train')


def test_label_out_of_range(tmp_path):
  images, labels = _random_split(4)
  labels[2] = 10
  idx.write_split(str(tmp_path), 'test', images, labels)
  with pytest.raises(UserError, match='label 10 outside 0..9'):
    idx.load_split(str(tmp_path), 'test')


def test_missing_file_and_directory(tmp_path):
  with pytest.raises(UserError) as e:
    idx.load_split(str(tmp_path), 'train')
  message = str(e.value)
  assert os.path.join(str(tmp_path), 'train-images-idx3-ubyte') in message
  assert 'config.data.data_dir' in message and 'config.data.download=True' in message
  with pytest.raises(UserError, match='does not exist'):
    idx.load_split(str(tmp_path / 'nope'), 'test')


def test_checksum_of_full_size_files(tmp_path):
  """A full-size (10,000) test split that is not MNIST fails the sha256 check."""
  images = np.zeros((10000, 28, 28, 1), np.uint8)
  idx.write_split(str(tmp_path), 'test', images, np.zeros(10000, np.int32))
  with pytest.raises(UserError, match='sha256'):
    idx.load_split(str(tmp_path), 'test')
  x, _ = idx.load_split(str(tmp_path), 'test', name='fashion_mnist')  # not checked
  assert x.shape == (10000, 28, 28, 1)


@pytest.mark.full_data
def test_full_mnist_idx(full_data_dir, mnist_small_dir):
  mnist = os.path.join(full_data_dir, 'mnist')
  for stem, digest in idx.SHA256.items():
    assert idx.sha256(idx.read_bytes(idx.find_file(mnist, stem))) == digest
  x, y = idx.load_split(mnist, 'train')
  tx, ty = idx.load_split(mnist, 'test')
  assert x.shape == (60000, 28, 28, 1) and tx.shape == (10000, 28, 28, 1)
  assert np.bincount(y).tolist()[:2] == [5923, 6742] and len(np.bincount(ty)) == 10
  # The committed fixture is the head of the real files.
  sx, sy = idx.load_split(mnist_small_dir, 'train')
  np.testing.assert_array_equal(sx, x[:5000])
  np.testing.assert_array_equal(sy, y[:5000])
  stx, sty = idx.load_split(mnist_small_dir, 'test')
  np.testing.assert_array_equal(stx, tx[:1000])
  np.testing.assert_array_equal(sty, ty[:1000])


# --- splits ---------------------------------------------------------------------

def test_pipeline_splits(small_config, mnist_small_dir):
  ds = pipeline.load(small_config.data)
  x, y = idx.load_split(mnist_small_dir, 'train')
  assert ds.name == 'mnist' and ds.num_classes == 10
  assert ds.sizes() == {'train': 4500, 'val': 500, 'test': 1000}
  np.testing.assert_array_equal(ds.val_images, x[-500:])  # val = the LAST 500
  np.testing.assert_array_equal(ds.val_labels, y[-500:])
  np.testing.assert_array_equal(ds.train_images, x[:4500])
  assert not set(_keys(ds.train_images, ds.train_labels)) & set(
      _keys(ds.val_images, ds.val_labels))
  assert ds.test_images.dtype == np.uint8 and ds.test_labels.dtype == np.int32
  with pytest.raises(dataclasses.FrozenInstanceError):
    ds.name = 'other'


def test_train_limit(small_config):
  small_config.data.train_limit = 1000
  ds = pipeline.load(small_config.data)
  assert ds.sizes() == {'train': 1000, 'val': 500, 'test': 1000}
  assert list(ds.train_labels[:12]) == FIRST_TRAIN_LABELS


@pytest.mark.parametrize('val_size, train_limit, match', [
    (-1, 0, 'val_size=-1'), (5000, 0, 'val_size=5000'),
    (500, 4501, 'train_limit=4501'), (500, -3, 'train_limit=-3')])
def test_bad_split_sizes(small_config, val_size, train_limit, match):
  small_config.data.val_size = val_size
  small_config.data.train_limit = train_limit
  with pytest.raises(UserError, match=match):
    pipeline.load(small_config.data)


def test_non_integer_val_size():
  with pytest.raises(UserError, match='val_size=2.5 must be an integer'):
    pipeline.split_train_val(np.zeros((10, 28, 28, 1)), np.zeros(10), 2.5)


def test_bad_source(small_config, tmp_path):
  small_config.data.source = 'csv'
  with pytest.raises(UserError, match="unknown config.data.source 'csv'"):
    pipeline.load(small_config.data)
  small_config.data.update(source='idx', name='kmnist', data_dir=str(tmp_path), download=True)
  with pytest.raises(UserError, match="no mirror of 'kmnist' is known"):
    pipeline.load(small_config.data)
  assert not os.listdir(tmp_path)


@pytest.mark.full_data
def test_full_idx_pipeline(full_data_dir):
  data = defaults.get_config().data
  data.source, data.data_dir = 'idx', os.path.join(full_data_dir, 'mnist')
  ds = pipeline.load(data)
  assert ds.sizes() == {'train': 55000, 'val': 5000, 'test': 10000}


# --- preprocessing --------------------------------------------------------------

def test_normalize():
  pixels = jnp.array([0, 51, 255], jnp.uint8)
  x = preprocess.normalize(pixels)
  assert x.dtype == jnp.float32
  np.testing.assert_allclose(x, [0.0, 0.2, 1.0], rtol=1e-6)
  z = preprocess.standardize(preprocess.normalize(pixels), 0.25, 0.5)
  np.testing.assert_allclose(z, (np.array([0, 0.2, 1]) - 0.25) / 0.5, rtol=1e-5)
  assert preprocess.normalize(pixels, dtype=jnp.bfloat16).dtype == jnp.bfloat16


def test_one_hot():
  y = preprocess.one_hot(jnp.array([0, 3, 9]), 10)
  assert y.shape == (3, 10) and y.dtype == jnp.float32
  np.testing.assert_array_equal(y.sum(-1), 1.0)
  np.testing.assert_array_equal(y.argmax(-1), [0, 3, 9])


# --- what a run records about its data -------------------------------------------

def test_pixel_stats_are_the_mean_and_std_of_x_over_the_split():
  r = np.random.default_rng(0)
  images = r.integers(0, 256, (7, 28, 28, 1)).astype(np.uint8)
  mean, std = describe.pixel_stats(images)
  x = images.astype(np.float64) / 255
  assert mean == pytest.approx(x.mean(), abs=1e-12) and std == pytest.approx(x.std(), abs=1e-12)


def _three_class_dir(tmp_path, level=60):
  r = np.random.default_rng(1)
  d = str(tmp_path / 'three')
  for split, n in (('train', 60), ('test', 30)):
    labels = np.arange(n) % 3
    images = np.full((n, 28, 28), level, np.uint8) + r.integers(0, 20, (n, 28, 28)).astype(np.uint8)
    idx.write_split(d, split, images, labels)
  return d


def _idx_config(directory, name='three'):
  config = defaults.get_config()
  config.data.update(source='idx', data_dir=directory, name=name, val_size=10, download=False)
  return config


def test_an_idx_dataset_has_the_classes_of_its_labels(tmp_path):
  ds = pipeline.load(_idx_config(_three_class_dir(tmp_path)).data)
  assert ds.num_classes == 3 and ds.label_names == ('0', '1', '2')


def test_resolve_records_the_training_split_and_the_classes(tmp_path):
  config = _idx_config(_three_class_dir(tmp_path))
  ds = pipeline.load(config.data)
  resolved = describe.resolve(config, ds)
  assert config.data.mean is None                     # the caller's config is left alone
  mean, std = describe.pixel_stats(ds.train_images)
  assert (resolved.data.mean, resolved.data.std) == (mean, std)
  assert 0.2 < mean < 0.35 and abs(mean - preprocess.MNIST_MEAN) > 0.05
  assert resolved.data.num_classes == 3 and resolved.data.num_train == 50
  assert tuple(resolved.data.label_names) == ('0', '1', '2')
  assert resolved.data.digits is False                # not an MNIST-like digit set
  assert describe.resolve(_idx_config(_three_class_dir(tmp_path), 'mnist'), ds).data.digits
  config.data.num_classes = 2
  with pytest.raises(UserError, match='config.data.num_classes=2 .* labels 0..2'):
    describe.resolve(config, ds)


@pytest.mark.full_data
def test_mnist_statistics_match_the_published_constants(full_data_dir):
  images, _ = idx.load_split(os.path.join(full_data_dir, 'mnist'), 'train')
  mean, std = describe.pixel_stats(images)              # all 60,000: the constants' source
  assert (round(mean, 4), round(std, 4)) == (preprocess.MNIST_MEAN, preprocess.MNIST_STD)
  mean, std = describe.pixel_stats(images[:55000])      # a run's training split
  assert round(mean, 4) == preprocess.MNIST_MEAN and abs(std - preprocess.MNIST_STD) < 2e-4


def test_pixel_stats_take_uint8_pixels_only():
  """Its exact sums hold for p in 0..255: a float or wider input is refused, not
  silently truncated."""
  with pytest.raises(ValueError, match='uint8'):
    describe.pixel_stats(np.full((2, 28, 28), 0.5, np.float32))
