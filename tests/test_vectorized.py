"""Vectorized trials: each of K vmapped trials equals its sequential twin."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mnist_jax import defaults, hyper, loop, train, vectorized, vectorized_loop
from mnist_jax.data import idx, preprocess
from mnist_jax.errors import UserError


def _config(**overrides):
  config = defaults.get_config()
  config.batch_size = 32
  config.schedule = 'warmup_cosine'
  config.warmup_epochs = 0.2
  config.num_epochs = 1
  config.model.dropout_rate = 0.0
  return hyper.apply(config, overrides)


def _max_diff(a, b):
  return max(float(jnp.max(jnp.abs(x - y))) for x, y in
             zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


def test_groups_follow_the_per_trial_keys():
  configs = [_config(), _config(learning_rate=3e-3, momentum=0.8, seed=4),
             _config(**{'model.dropout_rate': 0.3}), _config(batch_size=64),
             _config(weight_decay=1e-4), _config(optimizer='sgd'),
             _config(**{'model.name': 'vgg', 'model.dropout_rate': 0.1}),
             _config(**{'model.name': 'vgg', 'model.dropout_rate': 0.2})]
  assert vectorized.groups(configs) == [[0, 1, 2], [3], [4], [5], [6], [7]]


def _train_with_twins(group, data_dir, steps, keys_for_step):
  """``steps`` vectorized steps of batch 32 and, on the same batches and keys, each
  trial's own train.train_step (``keys_for_step(i)``: one shared key or (K,) keys);
  every step's losses must agree. Leaves the trained stack in ``group.states`` and
  returns the twins."""
  images, labels = idx.load_split(data_dir, 'train')
  order = np.random.default_rng(steps).integers(0, len(labels), (steps, 32))
  vstep, step = jax.jit(vectorized.train_step), jax.jit(train.train_step)
  states, twins = group.states, list(group.templates)
  for i, batch_idx in enumerate(order):
    batch = {'image': preprocess.normalize(jnp.asarray(images[batch_idx])),
             'label': jnp.asarray(labels[batch_idx])}
    keys = keys_for_step(i)
    states, metrics = vstep(states, batch, keys, group.keep)
    for k, twin in enumerate(twins):
      twins[k], twin_metrics = step(twin, batch, keys if keys.ndim == 0 else keys[k])
      assert float(metrics['loss'][k]) == pytest.approx(float(twin_metrics['loss']), abs=1e-5)
  group.states = states
  return twins


def test_vmapped_trials_match_sequential_train_step(mnist_small_dir):
  """K=3 trials (η, β, λ, dropout p and seed differ) for 24 steps: parameters and
  losses equal those of train.train_step run on each trial alone."""
  configs = [_config(learning_rate=1e-3, weight_decay=1e-3),
             _config(learning_rate=3e-3, momentum=0.8, weight_decay=1e-4,
                     **{'model.dropout_rate': 0.3}),
             _config(learning_rate=2e-3, weight_decay=1e-2, seed=1,
                     **{'model.dropout_rate': 0.1})]
  group = vectorized.create(configs, num_train=4500)
  twins = _train_with_twins(group, mnist_small_dir, 24, lambda i: jax.vmap(
      jax.random.fold_in, (0, None))(group.train_rngs, i))
  for k in range(3):
    trial = group.trial_state(k)
    assert _max_diff(trial.params, group.templates[k].params) > 1e-3  # it trained
    assert _max_diff(trial.params, twins[k].params) < 1e-5
    assert _max_diff(trial.opt_state, twins[k].opt_state) < 1e-5
  assert _max_diff(group.trial_state(0).params, group.trial_state(1).params) > 1e-3


def test_one_shared_key_matches_sequential_twins_with_augmentation(mnist_small_dir):
  """Equal seeds: one step key enters vmap unbatched (augmentation and dropout
  uniforms drawn once); each trial still equals train.train_step on its own."""
  aug = {'augment.translate': 1.0, 'augment.rotate': 10.0}
  configs = [_config(learning_rate=lr, **aug, **{'model.dropout_rate': p})
             for lr, p in ((1e-3, 0.0), (3e-3, 0.3), (2e-3, 0.1))]
  group = vectorized.create(configs, num_train=4500)
  assert group.shared_data
  twins = _train_with_twins(group, mnist_small_dir, 8,
                            lambda i: jax.random.fold_in(group.train_rngs[0], i))
  for k in range(3):
    assert _max_diff(group.trial_state(k).params, twins[k].params) < 1e-5
  # The key matters: another key gives other augmentations, hence other losses.
  images, labels = idx.load_split(mnist_small_dir, 'train')
  batch = {'image': preprocess.normalize(jnp.asarray(images[:32])),
           'label': jnp.asarray(labels[:32])}
  vstep = jax.jit(vectorized.train_step)
  _, same = vstep(group.states, batch, jax.random.key(7), group.keep)
  _, other = vstep(group.states, batch, jax.random.key(123), group.keep)
  assert float(jnp.max(jnp.abs(other['loss'] - same['loss']))) > 1e-4


def test_vectorized_loop_equals_loop_and_isolates_a_diverging_trial(tmp_path, small_config):
  small_config.data.train_limit = 300
  small_config.write_plots = False
  small_config.optimizer = 'sgd'
  small_config.num_epochs = 2
  configs = [hyper.apply(small_config, {'learning_rate': lr}) for lr in (0.1, 1e30)]
  dirs = [str(tmp_path / 'v0'), str(tmp_path / 'v1')]
  results = vectorized_loop.train_and_evaluate(configs, dirs)
  assert isinstance(results[1], UserError) and 'nan' in str(results[1])
  assert not os.path.exists(os.path.join(dirs[1], 'summary.json'))
  twin = loop.train_and_evaluate(configs[0], str(tmp_path / 'seq'))
  for key in ('test_loss', 'val_loss', 'best_val_accuracy', 'test_accuracy_at_best_val'):
    assert results[0][key] == pytest.approx(twin[key], abs=1e-4), key
  assert results[0]['vectorized_trials'] == 2
  with open(os.path.join(dirs[0], 'metrics.jsonl')) as f:
    assert [json.loads(l)['epoch'] for l in f] == [1, 2]
  assert sorted(os.listdir(os.path.join(dirs[0], 'checkpoints', 'latest'))) == ['1', '2']
