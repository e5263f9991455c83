"""engine/epoch.py: an epoch's batch order, compiled once per run."""
import functools

import jax
import numpy as np

from mnist_jax import train
from mnist_jax.config import defaults
from mnist_jax.data import pipeline
from mnist_jax.engine import epoch


def test_batch_order_is_a_permutation_prefix_and_the_same_at_level_1(monkeypatch):
  """feed's batch order (compiled at level 1 on the CPU, train.once_compiler_options)
  is the first steps·B rows of a permutation of 0..N−1, bit for bit XLA's level-3
  order."""
  monkeypatch.setenv('XLA_FLAGS', '')   # as a user's process has it (this suite sets -O0)
  config = defaults.get_config()
  config.batch_size = 60
  n = 1030
  none = np.zeros((0, 28, 28, 1), np.uint8), np.zeros(0, np.int32)
  data = pipeline.Dataset('mnist', 10, np.zeros((n, 28, 28, 1), np.uint8),
                          np.zeros(n, np.int32), *none, *none)
  feed, _ = epoch.feed(config, data, jax.make_mesh((1,), ('batch',)))
  key = jax.random.key(7)
  order = np.asarray(feed.permute(key))
  assert order.shape == (17, 60) and feed.steps == 17
  assert len(set(order.ravel())) == 17 * 60 and order.min() >= 0 and order.max() < n
  level3 = jax.jit(functools.partial(epoch.batch_order, num_train=n, steps=17, batch_size=60),
                   compiler_options={'xla_backend_optimization_level': 3})
  np.testing.assert_array_equal(order, level3(key))
  assert train.once_compiler_options() == {'xla_backend_optimization_level': 1}
