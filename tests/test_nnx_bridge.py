"""A user's own flax.nnx module (batch norm + dropout) trained by train.train_step
through nnx_bridge.from_nnx, and back to an nnx.Module with nnx_bridge.to_nnx."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen as nn
from flax import nnx

from mnist_jax import nnx_bridge, train
from mnist_jax.data import idx
from mnist_jax.errors import UserError

BATCH = 64


class SmallCNN(nnx.Module):
  """conv 3x3 (8) -> batch norm -> ReLU -> max-pool 2 -> dropout -> dense 10."""

  def __init__(self, rngs: nnx.Rngs, dropout_rate: float = 0.3):
    self.conv = nnx.Conv(1, 8, (3, 3), use_bias=False, rngs=rngs)  # BN adds the bias
    self.bn = nnx.BatchNorm(8, rngs=rngs)
    self.dropout = nnx.Dropout(dropout_rate, rngs=rngs)
    self.dense = nnx.Linear(14 * 14 * 8, 10, rngs=rngs)

  def __call__(self, x):
    x = nnx.max_pool(nnx.relu(self.bn(self.conv(x))), (2, 2), strides=(2, 2))
    return self.dense(self.dropout(x.reshape((x.shape[0], -1))))


TX = optax.adam(3e-3)   # one chain for every state: equal modules then compile once
STEP = jax.jit(train.train_step)
EVAL = jax.jit(train.eval_step)


def new_state(key):
  return nnx_bridge.from_nnx(SmallCNN(nnx.Rngs(key)), TX)


@pytest.fixture(scope='module')
def digits(mnist_small_dir):
  images, labels = idx.load_split(mnist_small_dir, 'train')
  return images[:20 * BATCH], labels[:20 * BATCH]


def batches(digits, steps):
  images, labels = digits
  return [{'image': images[i * BATCH:(i + 1) * BATCH], 'label': labels[i * BATCH:(i + 1) * BATCH]}
          for i in range(steps)]


def max_diff(a, b):
  return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
             for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


@pytest.fixture(scope='module')
def trained(digits):
  """(initial state, state after 20 jitted steps, their losses)."""
  state = first = new_state(jax.random.key(0))
  losses = []
  for batch in batches(digits, 20):
    state, metrics = STEP(state, batch, jax.random.key(1))
    losses.append(float(metrics['loss']))
  return first, state, losses


def test_the_state_holds_params_and_batch_stats_as_linen_does():
  state = new_state(jax.random.key(0))
  shapes = jax.tree_util.tree_map(jnp.shape, state.params)
  assert shapes['conv'] == {'kernel': (3, 3, 1, 8)}
  assert shapes['dense']['kernel'] == (14 * 14 * 8, 10)
  assert jax.tree_util.tree_map(jnp.shape, state.batch_stats) == {'bn': {'mean': (8,), 'var': (8,)}}
  assert int(state.step) == 0 and state.step.dtype == jnp.int32


def test_jitted_steps_lower_the_loss_and_update_batch_stats(trained):
  first, state, losses = trained
  assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:5]), losses
  assert int(state.step) == 20
  assert max_diff(first.batch_stats, state.batch_stats) > 1e-2
  assert max_diff(first.params, state.params) > 1e-2


def test_dropout_masks_differ_between_steps_and_the_step_is_pure(digits):
  state, batch, key = new_state(jax.random.key(0)), batches(digits, 1)[0], jax.random.key(1)
  _, a = STEP(state, batch, key)
  _, again = STEP(state, batch, key)
  _, next_step = STEP(state.replace(step=state.step + 1), batch, key)   # fold_in(key, step)
  assert float(a['loss']) == float(again['loss'])
  assert float(a['loss']) != float(next_step['loss'])
  x = state.inputs(batch['image'])

  def logits(key):
    return state.apply_fn(state.variables, x, train=True, rngs={'dropout': key},
                          mutable=['batch_stats'])[0]

  np.testing.assert_array_equal(logits(jax.random.key(2)), logits(jax.random.key(2)))
  assert float(jnp.abs(logits(jax.random.key(2)) - logits(jax.random.key(3))).max()) > 1e-3


def test_eval_step_is_deterministic(trained, digits):
  _, state, _ = trained
  images, labels = digits
  split = {'image': images[:500], 'label': labels[:500]}
  a, b = EVAL(state, split), EVAL(state, split)
  assert all(float(a[k]) == float(b[k]) for k in a)
  assert float(a['count']) == 500 and float(a['correct']) / 500 > 0.5


def test_equal_modules_compile_once(digits):
  batch = batches(digits, 1)[0]
  STEP(new_state(jax.random.key(5)), batch, jax.random.key(0))
  compiled = STEP._cache_size()   # pylint: disable=protected-access
  STEP(new_state(jax.random.key(6)), batch, jax.random.key(0))
  assert STEP._cache_size() == compiled   # pylint: disable=protected-access
  other = nnx_bridge.from_nnx(SmallCNN(nnx.Rngs(5), dropout_rate=0.5), TX)
  STEP(other, batch, jax.random.key(0))   # another setting: another program
  assert STEP._cache_size() == compiled + 1   # pylint: disable=protected-access


def test_vmap_over_three_seeds_matches_three_single_runs(digits):
  inits, rngs = jax.random.split(jax.random.key(10), 3), jax.random.split(jax.random.key(11), 3)
  states = jax.jit(jax.vmap(new_state))(inits)
  v_step = jax.jit(jax.vmap(train.train_step, in_axes=(0, None, 0)))
  data = batches(digits, 4)
  for batch in data:
    states, _ = v_step(states, batch, rngs)
  for k in range(3):
    alone = new_state(inits[k])
    for batch in data:
      alone, _ = STEP(alone, batch, rngs[k])
    member = jax.tree_util.tree_map(lambda leaf, k=k: np.asarray(leaf)[k], states)
    assert max_diff(member.params, alone.params) < 1e-4, k          # float rounding
    assert max_diff(member.batch_stats, alone.batch_stats) < 1e-6, k
  kernels = states.params['dense']['kernel']
  assert float(jnp.abs(kernels[0] - kernels[1]).max()) > 1e-2
  assert float(jnp.abs(kernels[1] - kernels[2]).max()) > 1e-2


def test_orbax_round_trip_gives_equal_arrays(trained, digits, tmp_path):
  from mnist_jax.store import checkpoint  # pylint: disable=g-import-not-at-top
  _, state, _ = trained
  mngr = checkpoint.manager(str(tmp_path / 'ckpt'))
  assert checkpoint.save(mngr, 1, state, {'epoch': 1})
  mngr.wait_until_finished()
  restored, meta = checkpoint.restore(checkpoint.reader(str(tmp_path / 'ckpt')),
                                      new_state(jax.random.key(0)))
  assert meta['epoch'] == 1 and int(restored.step) == int(state.step)
  for name in ('params', 'batch_stats', 'opt_state'):
    assert max_diff(getattr(restored, name), getattr(state, name)) == 0, name
  x = state.inputs(digits[0][:100])
  np.testing.assert_array_equal(restored.apply_fn(restored.variables, x),
                                state.apply_fn(state.variables, x))
  assert max_diff(nnx.to_pure_dict(nnx.state(nnx_bridge.to_nnx(restored), nnx.Param)),
                  state.params) == 0


def test_to_nnx_returns_the_module_with_the_trained_weights(trained, digits):
  _, state, _ = trained
  model = nnx_bridge.to_nnx(state)
  assert isinstance(model, SmallCNN)
  assert max_diff(nnx.to_pure_dict(nnx.state(model, nnx.Param)), state.params) == 0
  assert max_diff(nnx.to_pure_dict(nnx.state(model, nnx.BatchStat)), state.batch_stats) == 0
  x = state.inputs(digits[0][:100])
  served = nnx.view(model, deterministic=True, use_running_average=True)(x)
  np.testing.assert_allclose(served, state.apply_fn(state.variables, x, train=False),
                             rtol=1e-6, atol=1e-6)


class WithCounter(nnx.Module):
  def __init__(self, rngs):
    self.dense = nnx.Linear(784, 10, rngs=rngs)
    self.calls = nnx.Variable(jnp.zeros(()))

  def __call__(self, x):
    return self.dense(x.reshape((x.shape[0], -1)))


def test_what_the_step_cannot_carry_is_refused():
  with pytest.raises(UserError, match='holds calls as Variable'):
    nnx_bridge.from_nnx(WithCounter(nnx.Rngs(0)), TX)
  with pytest.raises(UserError, match='takes a flax.nnx.Module, not Dense'):
    nnx_bridge.from_nnx(nn.Dense(10), TX)
  params = nn.Dense(10).init(jax.random.key(0), jnp.zeros((1, 3)))['params']
  linen = train.TrainState.create(apply_fn=nn.Dense(10).apply, params=params, tx=TX)
  with pytest.raises(UserError, match='made by nnx_bridge.from_nnx'):
    nnx_bridge.to_nnx(linen)
