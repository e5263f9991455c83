"""The one evaluation pass: metrics from logits in one compiled program, the test
split read once at the end, probabilities that match the loss, the debiased
weight EMA, ``model_weights`` and the one best-epoch rule."""
import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mnist_jax import parallel, train
from mnist_jax.config import defaults, validate
from mnist_jax.data import idx
from mnist_jax.engine import calibration, evaluation, rundir, trainer
from mnist_jax.store import selection, workdir as workdir_lib
from mnist_jax.errors import UserError

pytestmark = pytest.mark.xdist_group('eval_pass')


def _config(data_dir, **overrides):
  config = defaults.get_config()
  config.data.source, config.data.data_dir, config.data.download = 'idx', data_dir, False
  config.data.val_size, config.batch_size, config.eval_batch_size = 500, 50, 500
  config.num_epochs, config.log_every_steps, config.write_plots = 1, 30, False
  config.model.name, config.model.hidden = 'mlp', (64,)
  for key, value in overrides.items():
    node = config
    *parents, leaf = key.split('.')
    for p in parents:
      node = node[p]
    node[leaf] = value
  return config


def _records(workdir):
  return workdir_lib.load_history(str(workdir))


@pytest.fixture(scope='module')
def runs(tmp_path_factory, mnist_small_dir):
  """Two epochs of a small MLP with a weight EMA: test only at the end, and the same
  run with test curves turned on."""
  root = tmp_path_factory.mktemp('eval_pass')
  out = {}
  for name, every in (('quiet', False), ('curves', True)):
    config = _config(mnist_small_dir, num_epochs=2, ema_decay=0.999,
                     eval_test_every_epoch=every)
    out[name] = (root / name, trainer.train_and_evaluate(config, str(root / name)).summary)
  return out


def test_per_epoch_records_hold_no_test_figures(runs):
  workdir, summary = runs['quiet']
  for record in _records(workdir):
    assert not [k for k in record if 'test' in k], record
    assert {'val_loss', 'val_accuracy', 'val_nll', 'val_ece', 'val_accuracy_ema'} <= set(record)
  for key in ('test_accuracy', 'test_loss', 'test_nll', 'test_ece', 'test_accuracy_ema',
              'test_accuracy_at_best_val', 'test_loss_at_best_val'):
    assert key in summary and np.isfinite(summary[key]), key
  assert summary['at_best_val']['epoch'] == summary['best_epoch']
  assert 'test_accuracy_ema' in summary['at_best_val']


def test_test_curves_on_request_match_the_end_of_run_figures(runs):
  quiet, curves = runs['quiet'][1], runs['curves'][1]
  records = _records(runs['curves'][0])
  assert all('test_accuracy' in r and 'test_ece' in r for r in records)
  assert records[-1]['test_accuracy'] == pytest.approx(curves['test_accuracy'], abs=1e-6)
  # reading test every epoch changes nothing else: same training, same end figures
  assert curves['test_accuracy'] == pytest.approx(quiet['test_accuracy'], abs=1e-6)
  assert curves['val_loss'] == pytest.approx(quiet['val_loss'], rel=1e-6)
  best = records[curves['best_epoch'] - 1]
  assert curves['test_accuracy_at_best_val'] == pytest.approx(best['test_accuracy'], abs=1e-6)


def test_summary_calibration_is_the_final_weights(runs, mnist_small_dir):
  workdir, summary = runs['quiet']
  _, state, _ = rundir.load_run(str(workdir), 'latest')
  images, labels = idx.load_split(mnist_small_dir, 'test')
  by_hand = calibration.metrics(evaluation.predict(state, images), labels)
  assert summary['test_nll'] == pytest.approx(by_hand['nll'], rel=1e-4)
  assert summary['test_ece'] == pytest.approx(by_hand['ece'], abs=1e-3)
  assert summary['test_accuracy'] == pytest.approx(by_hand['accuracy'], abs=1e-6)
  assert summary['val_nll'] == _records(workdir)[-1]['val_nll']   # the epoch's own pass


def test_ema_after_one_epoch_is_close_to_the_raw_weights(runs):
  first = _records(runs['quiet'][0])[0]
  assert first['val_accuracy_ema'] > first['val_accuracy'] - 0.03, first


def test_ema_update_follows_the_warm_up_decay():
  """TF's num_updates rule: d_t = min(d, (1 + t) / (10 + t)) at update t."""
  ema, new = {'w': jnp.zeros(3)}, {'w': jnp.ones(3)}
  got = train.ema_update(ema, new, 0.999, jnp.asarray(1))
  np.testing.assert_allclose(got['w'], 1 - 2 / 11, rtol=1e-6)
  got = train.ema_update(ema, new, 0.5, jnp.asarray(1000))
  np.testing.assert_allclose(got['w'], 0.5, rtol=1e-6)


def test_one_pass_compiles_once_for_many_calls(mnist_small_dir):
  images, labels = idx.load_split(mnist_small_dir, 'test')
  config = defaults.get_config()
  a = train.create_train_state(config, jax.random.key(0))
  b = train.create_train_state(config, jax.random.key(1))
  fn = evaluation.pass_fn(parallel.make_mesh(), stacked=False, members=1)
  before = fn._cache_size()   # pylint: disable=protected-access
  first = evaluation.metrics(a, images[:700], labels[:700], batch_size=200)
  second = evaluation.metrics(b, images, labels, batch_size=200)
  assert fn._cache_size() - before <= 1   # pylint: disable=protected-access
  assert first['count'] == 700 and second['count'] == 1000
  ref = calibration.metrics(evaluation.predict(b, images), labels)
  assert second['accuracy'] == pytest.approx(ref['accuracy'], abs=1e-6)
  assert second['nll'] == pytest.approx(ref['nll'], rel=1e-4)
  assert second['ece'] == pytest.approx(ref['ece'], abs=1e-4)
  assert second['loss'] == pytest.approx(ref['nll'], rel=1e-4)   # cce: loss is the NLL


def test_bce_probabilities_are_the_normalised_sigmoid(mnist_small_dir):
  z = jnp.asarray([[2.0, -1.0, 0.5]])
  s = jax.nn.sigmoid(z)
  np.testing.assert_allclose(train.probabilities(z, 'bce'), s / s.sum(-1, keepdims=True),
                             rtol=1e-6)
  np.testing.assert_allclose(train.probabilities(z, 'cce'), jax.nn.softmax(z), rtol=1e-6)
  config = defaults.get_config()
  config.loss = 'bce'
  state = train.create_train_state(config, jax.random.key(0))
  images, labels = idx.load_split(mnist_small_dir, 'test')
  logits = state.apply_fn(state.variables, state.inputs(images[:200]), train=False)
  want = train.probabilities(logits, 'bce')
  np.testing.assert_allclose(evaluation.predict(state, images[:200]), want, atol=1e-6)
  got = evaluation.metrics(state, images[:200], labels[:200])
  assert got['nll'] == pytest.approx(calibration.nll(want, labels[:200]), rel=1e-4)
  bce = float(jnp.mean(jnp.sum(jax.nn.softplus(logits) - jax.nn.one_hot(labels[:200], 10)
                               * logits, -1)))
  assert got['loss'] == pytest.approx(bce, rel=1e-4)   # 'loss' is the run's loss


def test_model_weights_key_is_checked():
  config = defaults.get_config()
  assert config.model_weights == 'raw' and config.eval_test_every_epoch is False
  config.model_weights = 'ema'
  with pytest.raises(UserError, match='model_weights'):
    validate.check(config)
  config.ema_decay = 0.999
  validate.check(config)
  config.model_weights = 'average'
  with pytest.raises(UserError, match="model_weights must be 'raw' or 'ema'"):
    validate.check(config)


def test_best_epoch_rule():
  history = [{'epoch': 1, 'val_accuracy': 0.9, 'val_accuracy_ema': 0.95},
             {'epoch': 2, 'val_accuracy': 0.95, 'val_accuracy_ema': 0.93},
             {'epoch': 3, 'val_accuracy': 0.95, 'val_accuracy_ema': 0.94}]
  assert selection.best(history)['epoch'] == 2     # the earliest of equal ones
  assert selection.best(history, 'ema')['epoch'] == 1
  assert selection.best([{'epoch': 1}]) is None     # no validation split
  assert selection.improves(history[:1], history[1])
  assert not selection.improves(history[:2], history[2])


def test_the_trainer_has_no_k_model_branch():
  source = inspect.getsource(trainer)
  assert 'is_ensemble' not in source and 'stacked' not in source.split('"""')[2]


def test_model_weights_ema_selects_and_evaluates_the_ema(tmp_path, mnist_small_dir):
  config = _config(mnist_small_dir, num_epochs=2, ema_decay=0.99, model_weights='ema')
  summary = trainer.train_and_evaluate(config, str(tmp_path / 'run')).summary
  records = _records(tmp_path / 'run')
  best = max(records, key=lambda r: r['val_accuracy_ema'])
  assert summary['best_epoch'] == best['epoch']
  assert summary['best_val_accuracy'] == best['val_accuracy_ema']
  assert summary['test_accuracy_at_best_val'] == summary['at_best_val']['test_accuracy_ema']
  result = rundir.checkpoint_metrics(str(tmp_path / 'run'), 'best')
  assert result['model_weights'] == 'ema' and result['epoch'] == best['epoch']
  assert result['test']['accuracy'] == pytest.approx(summary['test_accuracy_at_best_val'],
                                                     abs=1e-6)


def test_a_resumed_run_tests_the_weights_of_its_earlier_best_epoch(
    tmp_path, mnist_small_dir, script_val_accuracy):
  """e* lies before the resumed epoch: its weights come back from 'best', so
  summary.json's test figures at e* are that checkpoint's."""
  undo = script_val_accuracy([0.9, 0.5, 0.7])          # val: best at epoch 1
  workdir = str(tmp_path / 'run')
  config = _config(mnist_small_dir, num_epochs=2, schedule='constant')
  config.data.train_limit = 1000
  trainer.train_and_evaluate(config, workdir)
  config.num_epochs = 3
  summary = trainer.train_and_evaluate(config, workdir).summary      # resumes at epoch 2
  assert summary['epochs'] == 3 and summary['best_epoch'] == 1
  undo()
  best = rundir.checkpoint_metrics(workdir, 'best')
  assert best['epoch'] == 1
  assert summary['test_accuracy_at_best_val'] == pytest.approx(best['test']['accuracy'],
                                                               abs=1e-6)
  assert summary['test_loss_at_best_val'] == pytest.approx(best['test']['loss'], rel=1e-5)
  assert summary['test_loss_at_best_val'] != pytest.approx(summary['test_loss'], rel=1e-3)


def test_a_run_compiles_its_evaluation_once(tmp_path, mnist_small_dir, caplog):
  """Two epochs of val and test (splits of 500 and 1,000 images) and the EMA: one
  compilation of the evaluation pass, however many splits, epochs and variants."""
  config = _config(mnist_small_dir, num_epochs=2, ema_decay=0.9, eval_test_every_epoch=True)
  config.model.name, config.data.train_limit = 'mlp', 500
  config.model.hidden = (37,)   # a model no other test compiles
  with jax.log_compiles(True), caplog.at_level('WARNING'):
    trainer.train_and_evaluate(config, str(tmp_path / 'run'))
  compiled = [r for r in caplog.records if 'Compiling jit(evaluation_pass)' in r.getMessage()]
  assert len(compiled) == 1, [r.getMessage()[:200] for r in compiled]
  records = _records(tmp_path / 'run')
  assert all('test_accuracy_ema' in r and 'val_accuracy_ema' in r for r in records)


def test_a_run_is_evaluated_again_with_the_kernels_it_was_trained_with(tmp_path,
                                                                        mnist_small_dir):
  """A run of config.cpu_ynnpack = False is evaluated by XLA:CPU's own kernels in
  training and again when its checkpoint is read (the evaluate command): the same
  compiled evaluation, so the same test accuracy, and no program with YNNPACK's."""
  config = _config(mnist_small_dir, cpu_ynnpack=False)
  summary = trainer.train_and_evaluate(config, str(tmp_path)).summary
  jax.clear_caches()
  mesh = parallel.make_mesh()
  own = evaluation.pass_fn(mesh, compiler_options=train.compiler_options(config))
  default = evaluation.pass_fn(mesh)
  result = rundir.checkpoint_metrics(str(tmp_path), 'latest', data_dir=mnist_small_dir)
  assert own._cache_size() >= 1 and default._cache_size() == 0  # pylint: disable=protected-access
  assert result['test']['accuracy'] == summary['test_accuracy']
