"""Ensembles in one vmapped program, the weight EMA and calibration (ECE, NLL).

The strongest check: an ensemble of K members trained by engine/stacked.py equals K
single runs with the members' seeds (parameters, EMA and metrics, to float
rounding), and its prediction is the mean of those runs' probabilities.
"""
import json
import math
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from mnist_jax import api, predict, train
from mnist_jax.config import defaults, validate
from mnist_jax.data import pipeline
from mnist_jax.engine import calibration, ensemble, evaluation, memory, rundir, stacked, trainer
from mnist_jax.store import workdir as workdir_lib
from mnist_jax.errors import UserError
from mnist_jax.inspection import figures

pytestmark = pytest.mark.xdist_group('ensemble')

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
K = 2


# ---- calibration math, by hand --------------------------------------------------------

PROBS = np.array([[0.9, 0.1], [0.35, 0.65], [0.3, 0.7], [0.85, 0.15], [0.92, 0.08]])
LABELS = np.array([0, 0, 1, 1, 1])
# confidences 0.9 (bin 13, right), 0.65 (bin 9, wrong), 0.7 (bin 10, right),
# 0.85 (bin 12, wrong), 0.92 (bin 13, wrong): bin 13 holds two, acc 1/2, conf 0.91


def test_ece_by_hand():
  by_hand = (2 / 5 * abs(0.5 - 0.91) + 1 / 5 * abs(0 - 0.65) + 1 / 5 * abs(1 - 0.7)
             + 1 / 5 * abs(0 - 0.85))
  assert by_hand == pytest.approx(0.524)
  assert calibration.ece(PROBS, LABELS) == pytest.approx(by_hand, abs=1e-12)
  r = calibration.reliability(PROBS, LABELS)
  assert list(np.flatnonzero(r['count'])) == [9, 10, 12, 13]
  assert r['count'][13] == 2 and r['accuracy'][13] == 0.5
  assert r['confidence'][13] == pytest.approx(0.91)


def test_ece_is_zero_when_confidence_matches_accuracy():
  # 10 predictions at confidence 0.8 (one bin), 8 of them right
  probs = np.tile([[0.8, 0.2]], (10, 1))
  labels = np.array([0] * 8 + [1] * 2)
  assert calibration.ece(probs, labels) == pytest.approx(0.0, abs=1e-12)
  assert calibration.ece(probs, np.zeros(10, int)) == pytest.approx(0.2)


def test_nll_by_hand():
  picked = [0.9, 0.35, 0.7, 0.15, 0.08]
  assert calibration.nll(PROBS, LABELS) == pytest.approx(
      -sum(math.log(p) for p in picked) / 5, rel=1e-12)
  m = calibration.metrics(PROBS, LABELS)
  assert m['accuracy'] == pytest.approx(2 / 5)


def test_disagreement_and_mean_by_hand():
  members = np.array([[[0.6, 0.4]], [[0.3, 0.7]], [[0.8, 0.2]]])  # K = 3, one image
  np.testing.assert_allclose(ensemble.combine(members), [[1.7 / 3, 1.3 / 3]], rtol=1e-6)
  d = ensemble.disagreement(members)          # the vote is class 0
  assert d['spread'][0] == pytest.approx(np.std([0.6, 0.3, 0.8]), rel=1e-6)
  assert d['dissent'][0] == pytest.approx(1 / 3)


# ---- weight EMA, by hand ---------------------------------------------------------------


def test_ema_follows_its_formula_for_two_steps(mnist_small_dir):
  """θ_ema after steps 1, 2 = d2·d1·θ0 + d2(1−d1)θ1 + (1−d2)θ2 with the warm-up
  decay d_t = min(d, (1 + t)/(10 + t)), for the params and for batch-norm
  statistics alike (cnn has BN)."""
  config = defaults.get_config()
  config.model.name, config.model.features, config.model.dense = 'cnn', (4,), (8,)
  config.model.batch_norm, config.ema_decay, config.optimizer = True, 0.75, 'sgd'
  config.learning_rate = 0.5
  state = train.create_train_state(config, jax.random.key(0))
  assert state.ema_decay == 0.75
  images = np.asarray(api.load_data(data_dir=mnist_small_dir, val_size=0,
                                    download=False).train_images[:32])
  labels = np.arange(32) % 10
  batch = {'image': jnp.asarray(images), 'label': jnp.asarray(labels)}
  step = jax.jit(train.train_step)
  seen = [state]
  for _ in range(2):
    seen.append(step(seen[-1], batch, jax.random.key(1))[0])
  d1, d2 = min(0.75, 2 / 11), min(0.75, 3 / 12)
  for part in ('params', 'batch_stats'):
    t0, t1, t2 = (getattr(s, part) for s in seen)
    expected = jax.tree_util.tree_map(
        lambda a, b, c: d2 * d1 * a + d2 * (1 - d1) * b + (1 - d2) * c, t0, t1, t2)
    for e, got in zip(jax.tree_util.tree_leaves(expected),
                      jax.tree_util.tree_leaves(seen[-1].ema[part])):
      np.testing.assert_allclose(got, e, rtol=1e-5, atol=1e-6)
    assert max(float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) for a, b in zip(
        jax.tree_util.tree_leaves(t2), jax.tree_util.tree_leaves(seen[-1].ema[part]))) > 1e-4
  ema = train.ema_state(seen[-1])
  assert ema.params is seen[-1].ema['params'] and ema.step == seen[-1].step


def test_ema_off_keeps_the_state_as_it_was():
  state = train.create_train_state(defaults.get_config(), jax.random.key(0))
  assert state.ema == {} and train.ema_state(state) is state


# ---- an ensemble run equals its members' single runs -----------------------------------


def _config(mnist_small_dir, **changes):
  config = defaults.get_config()
  config.data.source, config.data.data_dir, config.data.download = 'idx', mnist_small_dir, False
  config.data.val_size, config.data.train_limit = 300, 1000
  config.batch_size, config.eval_batch_size = 50, 500
  config.num_epochs, config.log_every_steps, config.write_plots = 1, 10, False
  config.model.name = 'lenet5'
  config.ema_decay = 0.9
  config.augment.rotate = 10.0   # per-member augmentation draws
  config.update(changes)
  return config


@pytest.fixture(scope='module')
def runs(tmp_path_factory, mnist_small_dir):
  """One ensemble of K = 2 (seeds 3, 4) and the single runs of seeds 3 and 4."""
  root = tmp_path_factory.mktemp('ensemble')
  config = _config(mnist_small_dir, seed=3)
  config.ensemble.size = K
  ens_dir = str(root / 'ensemble')
  ens = stacked.train([config], [ens_dir])[0]
  singles = []
  for k in range(K):
    workdir = str(root / f'single{k}')
    summary = trainer.train_and_evaluate(_config(mnist_small_dir, seed=3 + k), workdir).summary
    singles.append((workdir, summary))
  return ens_dir, ens, singles


def _max_diff(a, b):
  return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) for x, y in
             zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


def test_members_equal_their_single_runs(runs):
  ens_dir, ens, singles = runs
  _, state, meta = rundir.load_run(ens_dir, 'latest')
  assert isinstance(state, ensemble.Ensemble) and state.size == K and meta['epoch'] == 1
  assert sorted(os.listdir(os.path.join(ens_dir, 'checkpoints', 'latest'))) == ['1']
  record = workdir_lib.load_history(ens_dir)[-1]
  for k, (workdir, summary) in enumerate(singles):
    _, single, _ = rundir.load_run(workdir, 'latest')
    member = state.member(k)
    assert _max_diff(member.params, single.params) < 2e-4
    assert _max_diff(member.ema, single.ema) < 2e-4
    for key in ('val_accuracy', 'val_accuracy_ema'):
      assert record[f'member{k}_{key}'] == pytest.approx(summary[key], abs=2e-3), key
    assert record[f'member{k}_val_loss'] == pytest.approx(summary['val_loss'], rel=1e-3)
    member = ens.summary['ensemble']['members'][k]   # test: read at the end
    for key in ('test_accuracy', 'test_accuracy_ema'):
      assert member[key] == pytest.approx(summary[key], abs=2e-3), key
    assert member['test_loss'] == pytest.approx(summary['test_loss'], rel=1e-3)
  assert _max_diff(state.member(0).params, state.member(1).params) > 1e-2  # two models


def test_ensemble_predicts_the_mean_of_its_members(runs, mnist_small_dir):
  ens_dir, _, singles = runs
  data = pipeline.load(_config(mnist_small_dir).data)
  config, ens = api.load(ens_dir, 'latest')
  assert config.ensemble.size == K
  alone = [evaluation.predict(rundir.load_run(w, 'latest')[1], data.test_images)
           for w, _ in singles]
  probs = api.predict(ens, data.test_images)
  np.testing.assert_allclose(probs, np.mean(alone, axis=0), atol=2e-4)
  np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
  summary = json.load(open(os.path.join(ens_dir, 'summary.json')))
  by_hand = calibration.metrics(np.mean(alone, axis=0), data.test_labels)
  assert summary['test_accuracy'] == pytest.approx(by_hand['accuracy'], abs=2e-3)
  assert summary['test_ece'] == pytest.approx(by_hand['ece'], abs=2e-3)
  assert summary['test_nll'] == pytest.approx(by_hand['nll'], rel=2e-3)
  assert api.evaluate(ens, data.test_images, data.test_labels)['accuracy'] == pytest.approx(
      summary['test_accuracy'], abs=1e-6)
  block = summary['ensemble']
  assert block['size'] == K and block['seeds'] == [3, 4]
  for k, (_, single) in enumerate(singles):
    assert block['members'][k]['test_accuracy'] == pytest.approx(single['test_accuracy'],
                                                                 abs=2e-3)
    assert block['members'][k]['test_ece'] == pytest.approx(single['test_ece'], abs=2e-3)
  # the members' EMA, combined the same way
  _, ema = api.load(ens_dir, 'latest', weights='ema')
  assert api.evaluate(ema, data.test_images, data.test_labels)['accuracy'] == pytest.approx(
      summary['test_accuracy_ema'], abs=1e-6)


def test_single_run_summary_has_calibration_and_ema(runs, mnist_small_dir):
  _, _, singles = runs
  summary = singles[0][1]
  data = pipeline.load(_config(mnist_small_dir).data)
  _, ema = api.load(singles[0][0], 'latest', weights='ema')
  assert api.evaluate(ema, data.test_images, data.test_labels)['accuracy'] == pytest.approx(
      summary['test_accuracy_ema'], abs=1e-6)
  with pytest.raises(UserError, match="unknown weights 'average'"):
    api.load(singles[0][0], 'latest', weights='average')
  for key in ('test_nll', 'test_ece', 'val_nll', 'val_ece', 'test_accuracy_ema',
              'test_ece_ema', 'val_accuracy_ema'):
    assert key in summary and np.isfinite(summary[key]), key
  assert 0 <= summary['test_ece'] <= 1
  # with the cross-entropy loss the NLL is the test loss
  assert summary['test_nll'] == pytest.approx(summary['test_loss'], rel=1e-4)


def test_metrics_and_tensorboard_carry_members_and_ensemble(runs):
  # pylint: disable-next=g-import-not-at-top
  from tensorboard.backend.event_processing import event_accumulator
  ens_dir, ens, _ = runs
  record = workdir_lib.load_history(ens_dir)[-1]
  for key in ('val_accuracy', 'val_ece', 'val_nll', 'val_accuracy_ema',
              'member0_val_accuracy', 'member1_val_ece', 'member1_train_loss'):
    assert key in record, key
  assert not [key for key in record if 'test' in key]   # test is read once, at the end
  acc = event_accumulator.EventAccumulator(os.path.join(ens_dir, 'tensorboard'))
  acc.Reload()
  assert {'val/ece', 'member0/val_accuracy', 'member1/val_accuracy_ema'} <= set(
      acc.Tags()['scalars'])
  assert not [t for t in acc.Tags()['scalars'] if 'test' in t]
  assert isinstance(ens.state, ensemble.Ensemble)
  # each loss is the loss it says: val_loss is the members' mean ℓ, as train_loss is,
  # val_nll the NLL of the ensemble's mean distribution (≤ the members' mean, Jensen)
  assert record['val_loss'] == pytest.approx(
      np.mean([record[f'member{k}_val_loss'] for k in range(K)]), rel=1e-6)
  assert record['train_loss'] == pytest.approx(
      np.mean([record[f'member{k}_train_loss'] for k in range(K)]), rel=1e-6)
  assert record['val_nll'] <= record['val_loss'] + 1e-6


def test_evaluate_predict_and_plots_use_the_ensemble(runs, mnist_small_dir, tmp_path):
  ens_dir, _, _ = runs
  result = rundir.checkpoint_metrics(ens_dir, 'best')
  summary = json.load(open(os.path.join(ens_dir, 'summary.json')))
  assert result['ensemble_size'] == K and len(result['test']['member_accuracy']) == K
  assert result['test']['accuracy'] == pytest.approx(summary['test_accuracy'], abs=1e-6)
  assert 'test_ema' in result and 'ece' in result['test']
  assert 'ensemble of 2' in rundir.format_line(result)
  data = pipeline.load(_config(mnist_small_dir).data)
  paths = []
  for i in range(3):
    paths.append(str(tmp_path / f'd{i}.png'))
    Image.fromarray(data.test_images[i, ..., 0]).save(paths[-1])
  out = predict.predict_files(ens_dir, paths)
  assert len(out) == 3
  for _, probs, d in out:
    assert probs.shape == (10,) and 0 <= d['dissent'] <= 1 and d['spread'] >= 0
  assert 'members: spread' in predict.format_line(*out[0])
  config, ens, _ = rundir.load_run(ens_dir, 'latest')
  written = figures.write_all(ens_dir, config, ens, data, tensorboard=False)
  assert [os.path.basename(p) for p in written][-1] == 'reliability.png'
  assert os.path.basename(written[3]) == 'filters.png'   # member 0's layers


def test_an_ensemble_resumes_from_its_one_checkpoint(runs, tmp_path, mnist_small_dir):
  ens_dir, _, _ = runs
  workdir = str(tmp_path / 'resumed')
  shutil.copytree(ens_dir, workdir)
  config = _config(mnist_small_dir, seed=3, num_epochs=2)
  config.ensemble.size = K
  summary = stacked.train([config], [workdir])[0].summary
  assert summary['epochs'] == 2 and summary['ensemble']['size'] == K
  assert [h['epoch'] for h in workdir_lib.load_history(workdir)] == [1, 2]


# ---- bad input: one line each -----------------------------------------------------------


def test_ensemble_size_below_one_is_refused():
  config = defaults.get_config()
  config.ensemble.size = 0
  with pytest.raises(UserError, match=r'ensemble.size must be an integer >= 1'):
    validate.check(config)
  config.ensemble.size, config.ema_decay = 1, 1.0
  with pytest.raises(UserError, match=r'ema_decay must be in \[0, 1\)'):
    validate.check(config)


def test_an_ensemble_too_large_for_memory_names_the_size_that_fits():
  config = defaults.get_config()
  config.model.name, config.ensemble.size = 'mlp', 64
  per = memory.member_bytes(config)
  params = 784 * 500 + 500 + 500 * 10 + 10
  assert per['state'] == params * 4 * 4   # params, gradient, Adam's two moments
  # every layer's output for a batch of 128, kept and differentiated
  assert per['activations'] >= 2 * 4 * 128 * (500 + 10)
  one = per['state'] + per['activations']
  memory.check_memory(config, available=64 * one / 0.9 + 1)   # fits
  with pytest.raises(UserError) as e:
    memory.check_memory(config, available=int(10.5 * one / 0.9))
  message = str(e.value)
  assert 'ensemble.size=64 needs about' in message and 'ensemble.size <= 10' in message
  assert '\n' not in message


def test_members_that_disagree_on_shape_are_refused():
  small = api.create('mlp', hidden=(32,))
  wide = api.create('mlp', hidden=(64,))
  with pytest.raises(UserError) as e:
    api.ensemble([small, wide])
  assert 'ensemble members disagree on shape: member 1' in str(e.value)
  assert '\n' not in str(e.value)
  images = np.zeros((3, 28, 28), np.uint8)
  both = api.ensemble([small, api.create('mlp', hidden=(32,), seed=1)])
  np.testing.assert_allclose(api.predict(both, images), np.mean(
      [api.predict(small, images), api.predict(api.create('mlp', hidden=(32,), seed=1),
                                                images)], axis=0), atol=1e-6)


def test_vectorized_trials_of_ensembles_are_refused(mnist_small_dir):
  a, b = _config(mnist_small_dir), _config(mnist_small_dir, learning_rate=3e-3)
  a.ensemble.size = b.ensemble.size = 2
  with pytest.raises(UserError, match='ensembles .* train one run at a time'):
    stacked.train([a, b], ['unused-a', 'unused-b'])


def test_cli_refuses_an_ensemble_of_zero_in_one_line(tmp_path):
  out = subprocess.run([sys.executable, '-m', 'mnist_jax.main', '--config=configs/mlp.py',
                        f'--workdir={tmp_path / "w"}', '--config.ensemble.size=0'],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert out.returncode == 2
  lines = out.stderr.strip().splitlines()
  assert lines[-1].startswith('error: ensemble.size must be an integer >= 1'), lines[-3:]
