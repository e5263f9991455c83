"""A group of K models (engine/stacked.py): each vmapped model equals its sequential twin."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from mnist_jax import models, train
from mnist_jax.config import defaults
from mnist_jax.search import hyper
from mnist_jax.engine import stacked, trainer
from mnist_jax.data import idx, preprocess
from mnist_jax.errors import UserError
from mnist_jax.nn import dropout


def _config(**overrides):
  config = defaults.get_config()
  config.batch_size = 32
  config.schedule = 'warmup_cosine'
  config.warmup_epochs = 0.2
  config.num_epochs = 1
  config.model.dropout_rate = 0.0
  return hyper.apply(config, overrides)


def _max_diff(a, b):
  return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) for x, y in
             zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


def test_groups_follow_the_per_trial_keys():
  configs = [_config(), _config(learning_rate=3e-3, momentum=0.8, seed=4),
             _config(**{'model.dropout_rate': 0.3}), _config(batch_size=64),
             _config(weight_decay=1e-4), _config(optimizer='sgd'),
             _config(**{'model.name': 'vgg', 'model.dropout_rate': 0.1}),
             _config(**{'model.name': 'vgg', 'model.dropout_rate': 0.2})]
  assert stacked.groups(configs) == [[0, 1, 2], [3], [4], [5], [6], [7]]


def test_dropout_rate_argument_gives_each_trial_its_own_p():
  """models.takes_dropout_rate: p_k passed to the call as an array under vmap gives
  trial k the output of its model with dropout_rate=p_k (same key: same masks, a
  dropped unit would move the logits by far more than the rounding of the batched
  matmuls), and its masks are nn.Dropout's; models with a static p are the others."""
  model = models.get_class('mlp')(hidden=(32, 16))
  x = jax.random.normal(jax.random.key(0), (8, 28, 28, 1))
  variables = model.init(jax.random.key(1), x)
  rngs = {'dropout': jax.random.key(2)}
  rates = (0.0, 0.3, 0.5)
  stacked_out = jax.jit(jax.vmap(lambda p: model.apply(
      variables, x, train=True, rngs=rngs, dropout_rate=p)))(jnp.asarray(rates, jnp.float32))
  for k, p in enumerate(rates):
    own = model.clone(dropout_rate=p).apply(variables, x, train=True, rngs=rngs)
    np.testing.assert_allclose(stacked_out[k], own, rtol=0, atol=1e-5)
  h = jax.random.normal(jax.random.key(3), (64, 32))
  ours = dropout.Dropout(0.3, deterministic=False).apply({}, h, rngs=rngs)
  np.testing.assert_array_equal(ours, nn.Dropout(0.3, deterministic=False).apply({}, h, rngs=rngs))
  assert [models.takes_dropout_rate(models.get_class(n)) for n in ('mlp', 'cnn', 'lenet5',
                                                                  'alexnet')] == [True] * 3 + [False]


def _train_with_twins(group, data_dir, steps, keys_for_step):
  """``steps`` vectorized steps of batch 32 and, on the same batches and keys, each
  trial's own train.train_step (``keys_for_step(i)``: one shared key or (K,) keys);
  every step's losses must agree. Leaves the trained stack in ``group.state`` and
  returns the twins."""
  images, labels = idx.load_split(data_dir, 'train')
  order = np.random.default_rng(steps).integers(0, len(labels), (steps, 32))
  vstep, step = jax.jit(stacked.step), jax.jit(train.train_step)
  states, twins = group.state, list(group.templates)
  for i, batch_idx in enumerate(order):
    batch = {'image': preprocess.normalize(jnp.asarray(images[batch_idx])),
             'label': jnp.asarray(labels[batch_idx])}
    keys = keys_for_step(i)
    states, metrics = vstep(states, batch, keys, group.dropout_rate)
    for k, twin in enumerate(twins):
      twins[k], twin_metrics = step(twin, batch, keys if keys.ndim == 0 else keys[k])
      assert float(metrics['loss'][k]) == pytest.approx(float(twin_metrics['loss']), abs=1e-5)
  group.state = states
  return twins


def test_vmapped_trials_match_sequential_train_step(mnist_small_dir):
  """K=2 trials (η, β, λ, dropout p and seed all differ) for 24 steps: parameters
  and losses equal those of train.train_step run on each trial alone. (Each twin
  with its own p compiles its own step: two trials keep the test short.)"""
  configs = [_config(learning_rate=1e-3, weight_decay=1e-3),
             _config(learning_rate=3e-3, momentum=0.8, weight_decay=1e-4, seed=1,
                     **{'model.dropout_rate': 0.3})]
  group = stacked.create(configs, num_train=4500)
  twins = _train_with_twins(group, mnist_small_dir, 24, lambda i: jnp.stack(
      [jax.random.fold_in(r, i) for r in group.train_keys]))
  for k in range(2):
    trial = group.member(k)
    assert _max_diff(trial.params, group.templates[k].params) > 1e-3  # it trained
    assert _max_diff(trial.params, twins[k].params) < 1e-5
    assert _max_diff(trial.opt_state, twins[k].opt_state) < 1e-5
  assert _max_diff(group.member(0).params, group.member(1).params) > 1e-3


def test_one_shared_key_matches_sequential_twins_with_augmentation(mnist_small_dir):
  """Equal seeds: one step key enters vmap unbatched (augmentation and dropout
  uniforms drawn once); each trial still equals train.train_step on its own (an
  MLP: the keys are the point; LeNet-5 under vmap is checked above)."""
  aug = {'augment.translate': 1.0, 'augment.rotate': 10.0}
  mlp = {'model.name': 'mlp', 'model.hidden': (64,)}
  configs = [_config(learning_rate=lr, **aug, **mlp, **{'model.dropout_rate': p})
             for lr, p in ((1e-3, 0.0), (3e-3, 0.3))]
  group = stacked.create(configs, num_train=4500)
  assert group.shared_data
  twins = _train_with_twins(group, mnist_small_dir, 8,
                            lambda i: jax.random.fold_in(group.train_keys[0], i))
  for k in range(2):
    assert _max_diff(group.member(k).params, twins[k].params) < 1e-5
  # The key matters: another key gives other augmentations, hence other losses.
  images, labels = idx.load_split(mnist_small_dir, 'train')
  batch = {'image': preprocess.normalize(jnp.asarray(images[:32])),
           'label': jnp.asarray(labels[:32])}
  vstep = jax.jit(stacked.step)
  _, same = vstep(group.state, batch, jax.random.key(7), group.dropout_rate)
  _, other = vstep(group.state, batch, jax.random.key(123), group.dropout_rate)
  assert float(jnp.max(jnp.abs(other['loss'] - same['loss']))) > 1e-4


@pytest.mark.parametrize('loop_mode', ['scan', 'step'])
def test_k_models_equal_k_runs_and_a_diverging_one_stops_alone(
    tmp_path, small_config, loop_mode):
  """stacked.train with K = 2 (one diverging) in either loop mode: the good model's
  metrics equal its own K = 1 run; the diverged one stops alone, no summary."""
  small_config.data.train_limit = 300
  small_config.optimizer = 'sgd'
  small_config.num_epochs = 2
  small_config.loop_mode = loop_mode
  configs = [hyper.apply(small_config, {'learning_rate': lr}) for lr in (0.1, 1e30)]
  dirs = [str(tmp_path / 'v0'), str(tmp_path / 'v1')]
  outcomes = stacked.train(configs, dirs)
  assert isinstance(outcomes[1].error, UserError) and 'nan' in str(outcomes[1].error)
  assert not os.path.exists(os.path.join(dirs[1], 'summary.json'))
  twin = trainer.train_and_evaluate(configs[0], str(tmp_path / 'seq')).summary
  for key in ('test_loss', 'val_loss', 'best_val_accuracy', 'test_accuracy_at_best_val'):
    assert outcomes[0].summary[key] == pytest.approx(twin[key], abs=1e-4), key
  assert outcomes[0].summary['vectorized_trials'] == 2
