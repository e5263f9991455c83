"""Your own images -> MNIST-like digits -> predictions; checkpoint evaluation.

Every test that needs a trained model reads conftest.py's lenet_run (the bare
command's LeNet-5: 3 epochs on the 4,500-image real-MNIST fixture, ~97 % test
accuracy).
"""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image, ImageDraw

from mnist_jax import api, predict, train
from mnist_jax.config import defaults
from mnist_jax.engine import evaluation, rundir
from mnist_jax.store import checkpoint, workdir as workdir_lib
from mnist_jax.inspection import image as image_lib
from mnist_jax.data import idx
from mnist_jax.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def run_dir(lenet_run):
  return lenet_run.workdir


@pytest.fixture(scope='module')
def best(run_dir):
  """(config, state) of the run's best checkpoint."""
  config, state, _ = rundir.load_run(run_dir, 'best')
  return config, state


@pytest.fixture(scope='module')
def test_split(mnist_small_dir):
  return idx.load_split(mnist_small_dir, 'test')


def draw(digit: str, dark_on_light=True, size=(200, 300)) -> np.ndarray:
  """A thick hand-drawn-like '1' or '7' on a 200x300 canvas (RGB uint8)."""
  background, ink = ('white', 'black') if dark_on_light else ('black', 'white')
  image = Image.new('RGB', size, background)
  pen = ImageDraw.Draw(image)
  if digit == '7':
    pen.line([(40, 60), (160, 60), (90, 250)], fill=ink, width=18)
  else:
    pen.line([(115, 40), (85, 260)], fill=ink, width=18)
  return np.asarray(image)


def run_cli(module, *args):
  return subprocess.run([sys.executable, '-m', f'mnist_jax.{module}', *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=300)


def test_reading_a_run_back_initializes_no_model(run_dir, monkeypatch):
  """The state a checkpoint is restored into is shapes only (jax.eval_shape): a
  reader (evaluate, predict, serve) traces the model's init but never compiles or
  runs it, and gets the arrays a restore into an initialized state gives."""
  create, traced = train.create_train_state, []

  def spy(*args, **kwargs):
    state = create(*args, **kwargs)
    traced.append(isinstance(state.step, jax.core.Tracer))
    return state

  monkeypatch.setattr(train, 'create_train_state', spy)
  config, state, _ = rundir.load_run(run_dir, 'best')
  assert traced == [True]
  mngr = checkpoint.reader(rundir.checkpoint_dir(run_dir, 'best'), best=True)
  try:
    initialized = create(config, jax.random.key(config.seed))
    restored, _ = checkpoint.restore(mngr, initialized, checkpoint.best_epoch(mngr))
  finally:
    mngr.close()
  leaves = jax.tree_util.tree_leaves(state)
  assert leaves and all(isinstance(a, jax.Array) for a in leaves)
  for a, b in zip(leaves, jax.tree_util.tree_leaves(restored), strict=True):
    np.testing.assert_array_equal(a, b)


def test_mnist_digits_pass_through_prepare_image_almost_unchanged(test_split):
  """MNIST digits are already 20-px boxes centred by mass: (nearly) a fixed point.
  A few move by a pixel: ink fainter than 25 % is outside the crop box."""
  images = test_split[0][:100, ..., 0]
  diffs = []
  for image in images:
    out = image_lib.prepare_image(image)
    assert out.shape == (28, 28) and out.dtype == np.uint8
    diffs.append(np.abs(out.astype(int) - image).mean())   # gray levels out of 255
    assert np.allclose(image_lib.centre_of_mass(out.astype(float)), 14.0, atol=1.0)
  assert np.median(diffs) < 0.5 and np.mean(np.array(diffs) < 3) >= 0.95


@pytest.mark.parametrize('digit', ['1', '7'])
def test_drawing_is_inverted_cropped_resized_and_centred(tmp_path, digit):
  path = str(tmp_path / f'{digit}.png')
  Image.fromarray(draw(digit)).save(path)
  out = image_lib.prepare_image(image_lib.load_image(path))
  assert out[0].max() == 0 and out[:, 0].max() == 0 and out.max() == 255  # ink bright
  rows, cols = np.flatnonzero(out.any(1)), np.flatnonzero(out.any(0))
  assert max(rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1) == 20
  assert np.allclose(image_lib.centre_of_mass(out.astype(float)), (14, 14), atol=1.0)
  # Light ink on a dark background needs no inversion and gives the same digit.
  light = image_lib.prepare_image(draw(digit, dark_on_light=False))
  assert np.abs(light.astype(int) - out).max() <= 1


def test_transparent_png_drawing_is_composited_on_white(tmp_path):
  rgba = np.zeros((300, 200, 4), np.uint8)
  rgba[..., 3] = 255 - draw('7')[..., 0]       # black ink, transparent elsewhere
  path = str(tmp_path / 'seven.png')
  Image.fromarray(rgba, 'RGBA').save(path)
  out = image_lib.prepare_image(image_lib.load_image(path))
  assert np.abs(out.astype(int) - image_lib.prepare_image(draw('7'))).max() <= 1


def test_area_resize_keeps_the_mean_and_handles_any_ratio():
  x = np.random.default_rng(0).uniform(0, 255, (97, 41))
  small = image_lib.resize_area(x, (20, 9))
  assert small.shape == (20, 9)
  assert np.isclose(small.mean(), x.mean())
  assert np.allclose(image_lib.area_matrix(7, 7), np.eye(7))


def test_cli_predicts_png_digits_like_the_in_memory_model(tmp_path, run_dir, best,
                                                          test_split):
  images, labels = test_split[0][:30], test_split[1][:30]
  paths = []
  for i, image in enumerate(images):
    paths.append(str(tmp_path / f'digit_{i}.png'))
    Image.fromarray(image[..., 0]).save(paths[-1])
  seven = str(tmp_path / 'drawn_7.jpg')
  Image.fromarray(draw('7')).save(seven, quality=90)
  out = run_cli('predict', f'--workdir={run_dir}', '--which=best', *paths, seven)
  assert out.returncode == 0, out.stderr[-2000:]
  lines = out.stdout.strip().splitlines()
  assert len(lines) == len(paths) + 1
  cli = [int(line.split(': ')[1].split()[0]) for line in lines]
  config, state = best
  prepared = np.stack([image_lib.prepare_image(x) for x in images])
  expected = evaluation.predict(state, prepared)
  assert lines[0] == predict.format_line(paths[0], expected[0])   # same top-3 text
  assert cli[:-1] == list(expected.argmax(-1))
  raw = evaluation.predict(state, images).argmax(-1)
  assert np.mean(raw == expected.argmax(-1)) >= 0.9
  assert np.mean(np.array(cli[:-1]) == labels) >= 0.8
  assert cli[-1] == 7, lines[-1]   # the drawn 7, by a ~97 % model
  assert not config.data.standardize


@pytest.mark.parametrize('digit', ['1', '7'])
def test_drawn_digits_are_recognized(best, digit):
  _, state = best
  probs = evaluation.predict(state, image_lib.prepare_image(draw(digit))[None])
  assert probs[0].argmax() == int(digit), probs[0].round(3)


def test_user_errors_name_the_problem(tmp_path, run_dir):
  text = tmp_path / 'notes.txt'
  text.write_text('not an image')
  blank = str(tmp_path / 'blank.png')
  Image.new('L', (50, 50), 255).save(blank)
  with pytest.raises(UserError, match='not found'):
    predict.predict_files(run_dir, [str(tmp_path / 'missing.png')])
  with pytest.raises(UserError, match='cannot read image'):
    predict.predict_files(run_dir, [str(text)])
  with pytest.raises(UserError, match='blank'):
    predict.predict_files(run_dir, [blank])
  with pytest.raises(UserError, match='no image given'):
    predict.predict_files(run_dir, [])
  empty = tmp_path / 'empty_run'
  empty.mkdir()
  (empty / 'config.json').write_text(defaults.get_config().to_json_best_effort())
  with pytest.raises(UserError, match='no best checkpoint'):
    rundir.load_run(str(empty), 'best')
  with pytest.raises(UserError, match='not a training run directory'):
    rundir.load_run(str(tmp_path / 'nowhere'))


def test_cli_errors_are_one_line_with_exit_2(tmp_path):
  out = run_cli('predict', f'--workdir={tmp_path}', str(tmp_path / 'missing.png'))
  assert out.returncode == 2
  assert out.stderr.strip().splitlines()[-1].startswith('error: image ')
  assert 'Traceback' not in out.stderr


def test_evaluate_reports_the_best_checkpoint(run_dir):
  result = rundir.checkpoint_metrics(run_dir, 'best')
  history = workdir_lib.load_history(run_dir)
  best = max(history, key=lambda h: h['val_accuracy'])
  assert result['epoch'] == best['epoch']
  assert result['val']['count'] == 500 and result['test']['count'] == 1000
  assert result['val']['accuracy'] == pytest.approx(best['val_accuracy'], abs=1e-6)
  with open(os.path.join(run_dir, 'summary.json')) as f:
    summary = json.load(f)   # test: read at the end, for the best-validation weights too
  assert result['test']['accuracy'] == pytest.approx(summary['test_accuracy_at_best_val'],
                                                     abs=1e-6)
  assert result['test']['loss'] == pytest.approx(summary['test_loss_at_best_val'], rel=1e-4)


def test_evaluate_cli_prints_json_and_a_human_line(run_dir):
  out = run_cli('evaluate', f'--workdir={run_dir}', '--which=latest')
  assert out.returncode == 0, out.stderr[-2000:]
  json_line, human = out.stdout.strip().splitlines()[-2:]
  result = json.loads(json_line)
  assert result['which'] == 'latest' and result['epoch'] == 3
  with open(os.path.join(run_dir, 'summary.json')) as f:   # the final weights' test figure
    assert result['test']['accuracy'] == pytest.approx(json.load(f)['test_accuracy'], abs=1e-6)
  assert human.startswith('latest checkpoint (epoch 3): val loss')


def test_api_load_gives_the_trained_model(run_dir, test_split):
  config, state = api.load(run_dir, 'latest')
  assert config.model.name == 'lenet5' and config.num_epochs == 3 and int(state.step) == 270
  result = api.evaluate(state, *test_split)
  with open(os.path.join(run_dir, 'summary.json')) as f:
    assert result['accuracy'] == pytest.approx(json.load(f)['test_accuracy'], abs=1e-6)


def test_probabilities_of_no_images_have_the_models_class_count():
  import jax  # pylint: disable=g-import-not-at-top
  from mnist_jax import train  # pylint: disable=g-import-not-at-top
  config = defaults.get_config()
  config.model.name = 'mlp'
  state = train.create_train_state(config, jax.random.key(0), num_classes=3)
  assert evaluation.predict(state, np.zeros((0, 28, 28), np.uint8)).shape == (0, 3)
  assert evaluation.predict(state, np.zeros((2, 28, 28), np.uint8)).shape == (2, 3)
