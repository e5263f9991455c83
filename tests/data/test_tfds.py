"""The TFDS source behaves as tfds.load: data_dir, prepared copies offline, mock_data,
array_record copies read without TensorFlow, and one-line errors naming the extra."""
import json
import os
import subprocess
import sys
import types

import numpy as np
import pytest

from mnist_jax import api, extras
from mnist_jax.config import defaults
from mnist_jax.data import idx, pipeline
from mnist_jax.data import tfds as tfds_source
from mnist_jax.errors import UserError

tfds = pytest.importorskip('tensorflow_datasets')  # the tfds extra (the test extra holds it)

# pytest-xdist: one worker runs this file, so TensorFlow loads once
pytestmark = pytest.mark.xdist_group('tfds')

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _keys(images, labels):
  """Sorted (image bytes + label) records: equal iff same examples, any order."""
  flat = np.concatenate([images.reshape(len(images), -1),
                         labels.astype(np.uint8)[:, None]], axis=1)
  return sorted(row.tobytes() for row in flat)


def _tfds_config(**data):
  config = defaults.get_config()
  config.data.source = 'tfds'
  config.data.update(data)
  return config


# --- a prepared copy, offline ------------------------------------------------------

@pytest.fixture(scope='module')
def tfds_dataset(full_data_dir):
  """The one TFDS load of the full copy in this module (imports TensorFlow)."""
  return pipeline.load(_tfds_config(
      download=False, data_dir=os.path.join(full_data_dir, 'tensorflow_datasets')).data)


@pytest.mark.full_data
def test_tfds_equals_idx_up_to_order(tfds_dataset, full_data_dir):
  """TFDS stores MNIST in its own (shuffled) order: same examples, another order."""
  ds = tfds_dataset
  assert ds.num_classes == 10 and ds.sizes() == {'train': 55000, 'val': 5000,
                                                  'test': 10000}
  assert ds.train_images.dtype == np.uint8 and ds.train_labels.dtype == np.int32
  mnist = os.path.join(full_data_dir, 'mnist')
  for split, images, labels in (
      ('train', np.concatenate([ds.train_images, ds.val_images]),
       np.concatenate([ds.train_labels, ds.val_labels])),
      ('test', ds.test_images, ds.test_labels)):
    x, y = idx.load_split(mnist, split)
    assert _keys(images, labels) == _keys(x, y)


@pytest.mark.full_data
def test_tfds_data_dir_from_environment(tfds_dataset, full_data_dir, monkeypatch):
  tfds_dir = os.path.join(full_data_dir, 'tensorflow_datasets')
  monkeypatch.setenv('TFDS_DATA_DIR', tfds_dir)
  x, y = tfds_source.load_split('mnist', 'test[:10]', data_dir=None, download=False)
  np.testing.assert_array_equal(x, tfds_dataset.test_images[:10])
  np.testing.assert_array_equal(y, tfds_dataset.test_labels[:10])


def test_tfds_errors_without_data(tmp_path):
  with pytest.raises(UserError, match='not in .*TFDS_DATA_DIR.*download=True'):
    tfds_source.load_split('mnist', 'train', str(tmp_path), download=False)
  with pytest.raises(UserError, match="unknown TFDS dataset 'mnistt'"):
    tfds_source.load_split('mnistt', 'train', str(tmp_path), download=False)
  with pytest.raises(UserError, match=r'\(32, 32, 3\), not 28x28x1'):
    tfds_source.load_split('cifar10', 'train', str(tmp_path), download=True)
  assert not os.listdir(tmp_path)  # nothing was downloaded


def test_tfds_download_failure_is_a_user_error():
  def fail():
    raise ConnectionError('Failed to resolve storage.googleapis.com')
  builder = types.SimpleNamespace(data_dir_root='/d', download_and_prepare=fail)
  with pytest.raises(UserError, match='downloading .* failed.*TFDS_DATA_DIR'):
    tfds_source.prepare(builder, 'mnist')


# --- tfds.testing.mock_data --------------------------------------------------------

def test_the_tfds_source_loads_and_trains_under_mock_data():
  """As Flax's examples test their input pipelines: TFDS's own mock replaces the
  download and the reading, so nothing may look at the network or the disk first."""
  for download in (True, False):
    with tfds.testing.mock_data(num_examples=64):
      data = pipeline.load(_tfds_config(val_size=16, download=download).data)
    assert data.sizes() == {'train': 48, 'val': 16, 'test': 64}
    assert data.train_images.shape == (48, 28, 28, 1)
    assert data.train_images.dtype == np.uint8 and data.train_labels.dtype == np.int32
    assert data.num_classes == 10 and data.label_names == tuple('0123456789')
  state = api.create('mlp', data=data, batch_size=16)
  trained = api.fit(state, data, steps=3)
  assert int(trained.step) == 3
  assert np.isfinite(api.evaluate(trained, data.test_images, data.test_labels)['loss'])


# --- array_record copies: read without TensorFlow ------------------------------------

class _Supervised(tfds.dataset_builders.AdhocBuilder, skip_registration=True):
  """TFDS's ad-hoc builder with (image, label) as its supervised keys."""

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=self._feature_spec,
                                 supervised_keys=('image', 'label'), disable_shuffling=True)


def _write_array_record(data_dir, mnist_small_dir):
  """The fixture's first 300 / 100 digits as TFDS dataset 'small_digits' (array_record)."""
  features = tfds.features.FeaturesDict({
      'image': tfds.features.Image(shape=(28, 28, 1)),
      'label': tfds.features.ClassLabel(names=[str(k) for k in range(10)])})
  splits = {}
  for split, n in (('train', 300), ('test', 100)):
    x, y = idx.load_split(mnist_small_dir, split)
    splits[split] = [(i, {'image': x[i], 'label': int(y[i])}) for i in range(n)]
  _Supervised(name='small_digits', version='1.0.0', features=features,
              split_datasets=splits, data_dir=str(data_dir),
              file_format='array_record').download_and_prepare()


def test_an_array_record_copy_is_read_without_tensorflow(tmp_path, mnist_small_dir):
  _write_array_record(tmp_path, mnist_small_dir)
  read = ('import json, sys\n'
          'from mnist_jax.config import defaults\n'
          'from mnist_jax.data import pipeline\n'
          'config = defaults.get_config().data\n'
          f'config.update(source="tfds", name="small_digits", data_dir={str(tmp_path)!r}, '
          'val_size=50)\n'
          'data = pipeline.load(config)\n'
          'print(json.dumps({"sizes": data.sizes(), "labels": data.test_labels[:12].tolist(),'
          ' "tensorflow": "tensorflow" in sys.modules}))\n')
  out = subprocess.run([sys.executable, '-c', read], cwd=ROOT, capture_output=True,
                       text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  result = json.loads(out.stdout.splitlines()[-1])
  assert result['sizes'] == {'train': 250, 'val': 50, 'test': 100}
  _, labels = idx.load_split(mnist_small_dir, 'test')
  assert result['labels'] == labels[:12].tolist()     # the stored order, unshuffled
  assert result['tensorflow'] is False


# --- the tfds extra ------------------------------------------------------------------

def test_a_missing_tfds_names_the_extra():
  """The command on an install without the tfds extra: one line saying what to install."""
  run = ("import runpy, sys\n"
         "sys.modules['tensorflow_datasets'] = None   # as if not installed\n"
         "sys.argv = ['main', '--config=configs/lenet.py', '--config.data.source=tfds']\n"
         "runpy.run_module('mnist_jax.main', run_name='__main__')\n")
  out = subprocess.run([sys.executable, '-c', run], cwd=ROOT, capture_output=True,
                       text=True, timeout=300)
  assert out.returncode == 2
  assert out.stderr.strip().splitlines()[-1] == (
      "error: the TFDS source needs TensorFlow Datasets: pip install 'mnist_jax[tfds]'")


def test_require_names_the_extra_only_for_the_missing_package(tmp_path, monkeypatch):
  """An absent package names its extra; a package whose own import fails is a broken
  install and keeps its error."""
  (tmp_path / 'broken_pkg.py').write_text('import no_such_dependency_of_broken_pkg\n')
  monkeypatch.syspath_prepend(str(tmp_path))
  monkeypatch.setitem(extras.EXTRAS, 'absent_pkg', ('tfds', 'Absent'))
  monkeypatch.setitem(extras.EXTRAS, 'broken_pkg', ('postgres', 'Broken'))
  with pytest.raises(UserError) as e:
    extras.require('absent_pkg', 'reading it')
  assert str(e.value) == "reading it needs Absent: pip install 'mnist_jax[tfds]'"
  with pytest.raises(ModuleNotFoundError, match='no_such_dependency_of_broken_pkg'):
    extras.require('broken_pkg', 'reading it')
  assert extras.require('tensorflow_datasets', 'the TFDS source') is tfds
