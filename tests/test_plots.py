"""The plots of a run (PNG files + TensorBoard) and the layer capture behind them.

The trained model is conftest.py's lenet_run (LeNet-5 with augmentation by the
bare command, which writes the plots at its end); the other tests use freshly
initialized models.
"""
import json
import logging
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import optax
import pytest
from flax import linen as nn
from PIL import Image

from mnist_jax import train
from mnist_jax.inspection import confusion as confusion_lib, figures, layers as layers_lib
from mnist_jax.config import defaults
from mnist_jax.engine import rundir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PLOTS = ('curves', 'confusion', 'misclassified', 'filters', 'feature_maps', 'augmented',
         'reliability')


@pytest.fixture(scope='module')
def run(lenet_run):
  """(workdir, config, the plots' paths, state) of the command's run."""
  config, state, _ = rundir.load_run(lenet_run.workdir)
  paths = [os.path.join(lenet_run.workdir, 'plots', f'{name}.png') for name in PLOTS]
  return lenet_run.workdir, config, paths, state


def fresh_state(name, **model):
  config = defaults.get_config()
  config.model.name = name
  config.model.update(model)
  return train.create_train_state(config, jax.random.key(0))


def test_a_run_writes_every_plot_as_a_readable_png(run):
  workdir, _, paths, _ = run
  assert sorted(os.listdir(os.path.join(workdir, 'plots'))) == sorted(
      os.path.basename(p) for p in paths)
  for path in paths:
    assert os.path.dirname(path) == os.path.join(workdir, 'plots')
    with Image.open(path) as image:
      assert image.format == 'PNG' and min(image.size) >= 100
      pixels = np.asarray(image.convert('L'))
    assert pixels.std() > 10   # not a blank canvas
    assert os.path.getsize(path) < 400_000


def test_tensorboard_has_scalars_plot_images_and_hparams(run):
  from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=g-import-not-at-top
  from tensorboard.plugins.hparams import plugin_data_pb2  # pylint: disable=g-import-not-at-top
  workdir, config, _, _ = run
  acc = event_accumulator.EventAccumulator(
      os.path.join(workdir, 'tensorboard'), size_guidance={'images': 0, 'tensors': 0})
  acc.Reload()
  tags = acc.Tags()
  assert {'train/loss', 'val/accuracy', 'final/test_accuracy'} <= set(tags['scalars'])
  assert 'test/accuracy' not in tags['scalars']   # test is read once, at the end
  assert {f'plots/{name}' for name in PLOTS} <= set(tags['images'])
  image = acc.Images('plots/confusion')[-1]
  assert image.step == 3 and image.width > 300   # the last epoch
  content = acc.PluginTagToContent('hparams')
  start = plugin_data_pb2.HParamsPluginData.FromString(
      content['_hparams_/session_start_info']).session_start_info
  assert start.hparams['learning_rate'].number_value == pytest.approx(config.learning_rate)
  assert start.hparams['model.name'].string_value == 'lenet5'
  assert start.hparams['augment.rotate'].number_value == 10.0
  final = acc.Scalars('final/test_accuracy')[-1].value
  with open(os.path.join(workdir, 'summary.json')) as f:
    assert final == pytest.approx(json.load(f)['test_accuracy'])


def test_plots_cli_rebuilds_the_run_from_its_workdir(tmp_path, run):
  workdir = str(tmp_path / 'run')
  shutil.copytree(run[0], workdir)            # the shared run stays as it is
  paths = [os.path.join(workdir, 'plots', os.path.basename(p)) for p in run[2]]
  for path in paths:
    os.remove(path)
  out = subprocess.run([sys.executable, '-m', 'mnist_jax.plots', f'--workdir={workdir}',
                        '--which=best', '--notensorboard'], cwd=ROOT, capture_output=True,
                       text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  assert out.stdout.startswith(f'{len(PLOTS)} plots of the best checkpoint (epoch 3):')
  assert all(os.path.exists(p) for p in paths)


def test_confusion_matrix_counts_true_by_predicted():
  m = confusion_lib.confusion_matrix([0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 2, 0], 3)
  np.testing.assert_array_equal(m, [[1, 1, 0], [0, 1, 0], [1, 0, 2]])


def test_most_confident_mistakes_come_first():
  probs = np.array([[0.9, 0.1], [0.3, 0.7], [0.2, 0.8], [0.6, 0.4], [0.05, 0.95]])
  labels = np.array([0, 0, 0, 1, 1])
  np.testing.assert_array_equal(confusion_lib.mistakes(labels, probs), [2, 1, 3])


def test_a_gallery_is_one_canvas_with_each_tile_in_its_box():
  """The galleries (filters, mistakes, feature maps, augmentation) draw their tiles
  as one image: tile k at its box, NaN (the background) everywhere else."""
  tiles = np.arange(5 * 2 * 3, dtype=np.float32).reshape(5, 2, 3)
  canvas = figures._mosaic(tiles, 2, gap=(1, 2))   # pylint: disable=protected-access
  assert canvas.shape == (3 * (2 + 1) - 1, 2 * (3 + 2) - 2)   # 3 rows, 2 columns
  for k in range(5):
    top, left = figures._tile_box(k, 2, (2, 3), (1, 2))   # pylint: disable=protected-access
    np.testing.assert_array_equal(canvas[top:top + 2, left:left + 3], tiles[k])
  assert np.isnan(canvas).sum() == canvas.size - tiles.size
  scaled = figures._scaled(np.stack([np.full((2, 2), -4.0), np.zeros((2, 2)),   # pylint: disable=protected-access
                                     np.array([[1.0, -0.5], [0.25, 0.0]])]))
  np.testing.assert_array_equal(scaled[0], -1.0)
  assert not scaled[1].any() and np.abs(scaled[2]).max() == 1.0


def test_feature_maps_capture_lenets_conv_layers(tmp_path, run):
  state = run[-1]
  layers = layers_lib.capture_layers(state, np.zeros((1, 28, 28, 1)), ('conv',))
  assert [(n, o.shape) for n, _, o in layers] == [('C1', (1, 28, 28, 6)),
                                                  ('C3', (1, 10, 10, 16))]
  paths = figures.feature_maps(state, np.full((28, 28, 1), 9, np.uint8), 7,
                             str(tmp_path / 'fm'))
  assert paths == [str(tmp_path / 'fm.png')] and os.path.exists(paths[0])


def test_feature_maps_of_a_deep_cnn_take_one_page_per_12_layers(tmp_path):
  state = fresh_state('cnn', features=(2,) * 13, pool='none', batch_norm=False, dense=())
  layers = layers_lib.capture_layers(state, np.zeros((1, 28, 28, 1)), ('conv',))
  assert [n for n, _, _ in layers] == [f'conv_{i}' for i in range(13)]
  assert all(o.shape == (1, 28, 28, 2) for _, _, o in layers)
  paths = figures.feature_maps(state, np.full((28, 28, 1), 200, np.uint8), 3,
                             str(tmp_path / 'fm'))
  assert [os.path.basename(p) for p in paths] == ['fm.png', 'fm_2.png']


class DiagonalConv(nn.Module):
  """A conv layer that is not nn.Conv: a depthwise 3x3 kernel written by hand."""

  @nn.compact
  def __call__(self, x):
    w = self.param('kernel', nn.initializers.normal(1.0), (3, 3, 1, x.shape[-1]))
    return jax.lax.conv_general_dilated(x, w, (1, 1), 'SAME', feature_group_count=x.shape[-1],
                                        dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


class Custom(nn.Module):

  @nn.compact
  def __call__(self, x, train=False):
    x = nn.relu(nn.Conv(3, (5, 5), name='first')(x))
    x = DiagonalConv(name='depthwise')(x)
    return nn.Dense(10, name='head')(x.reshape((x.shape[0], -1)))


def test_custom_conv_modules_count_as_conv_layers(tmp_path):
  model = Custom()
  variables = model.init(jax.random.key(0), np.zeros((1, 28, 28, 1), np.float32))
  state = train.TrainState.create(apply_fn=model.apply, params=variables['params'],
                                  tx=optax.identity())
  layers = layers_lib.capture_layers(state, np.zeros((2, 28, 28, 1)))
  assert [(n, k, o.shape) for n, k, o in layers] == [
      ('first', 'conv', (2, 28, 28, 3)), ('depthwise', 'conv', (2, 28, 28, 3)),
      ('head', 'dense', (2, 10))]
  assert layers_lib.layer_names(state) == [(n, k) for n, k, _ in layers]   # traced only
  assert len(figures.feature_maps(state, np.zeros((28, 28, 1), np.uint8), 0,
                                str(tmp_path / 'fm'))) == 1
  assert os.path.exists(figures.filters(state, str(tmp_path / 'filters.png')))


@pytest.mark.parametrize('name', ['mlp', 'perceptron'])
def test_models_without_conv_skip_feature_maps_but_show_dense_templates(
    tmp_path, caplog, name):
  state = fresh_state(name)
  with caplog.at_level(logging.INFO, logger='absl'):
    assert figures.feature_maps(state, np.zeros((28, 28, 1), np.uint8), 0,
                              str(tmp_path / 'fm')) == []
  assert 'has no conv layer' in caplog.text
  path = figures.filters(state, str(tmp_path / 'filters.png'))
  with Image.open(path) as image:
    assert image.size[0] > 200
