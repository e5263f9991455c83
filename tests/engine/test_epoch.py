"""engine/epoch.py: a run's keys and an epoch's batch order, each one program."""
import functools

import jax
import numpy as np

from mnist_jax import train
from mnist_jax.config import defaults
from mnist_jax.data import pipeline
from mnist_jax.engine import epoch


def test_run_keys_are_split_key_seed_bit_for_bit():
  """run_keys(seed) (one program) is (init_key, train_key) = split(key(seed)), for any
  seed key(seed) takes (its low 32 bits)."""
  for seed in (0, 7, 2**31 + 3, -1, 2**40 + 5):
    want = jax.random.split(jax.random.key(seed))
    got = epoch.run_keys(seed)
    for w, g in zip(want, got):
      np.testing.assert_array_equal(jax.random.key_data(g), jax.random.key_data(w))


def test_epoch_order_is_a_permutation_prefix_the_same_at_level_1(monkeypatch):
  """epoch_order (compiled at level 1 on the CPU, train.once_compiler_options) draws
  (perm_key, step_key) = split(fold_in(train_key, e)) and, from perm_key, the first
  steps·B rows of a permutation of 0..N−1: bit for bit XLA's level-3 order."""
  monkeypatch.setenv('XLA_FLAGS', '')   # as a user's process has it (this suite sets -O0)
  config = defaults.get_config()
  config.batch_size = 60
  n = 1030
  none = np.zeros((0, 28, 28, 1), np.uint8), np.zeros(0, np.int32)
  data = pipeline.Dataset('mnist', 10, np.zeros((n, 28, 28, 1), np.uint8),
                          np.zeros(n, np.int32), *none, *none)
  feed, _ = epoch.feed(config, data, jax.make_mesh((1,), ('batch',)))
  train_key = jax.random.key(7)
  order, step_key = epoch.epoch_order(feed, train_key, 3)
  order = np.asarray(order)
  assert order.shape == (17, 60) and feed.steps == 17
  assert len(set(order.ravel())) == 17 * 60 and order.min() >= 0 and order.max() < n
  perm_key, want_step_key = jax.random.split(jax.random.fold_in(train_key, 3))
  np.testing.assert_array_equal(jax.random.key_data(step_key),
                                jax.random.key_data(want_step_key))
  level3 = jax.jit(functools.partial(epoch.batch_order, num_train=n, steps=17, batch_size=60),
                   compiler_options={'xla_backend_optimization_level': 3})
  np.testing.assert_array_equal(order, level3(perm_key))
  assert train.once_compiler_options() == {'xla_backend_optimization_level': 1}
