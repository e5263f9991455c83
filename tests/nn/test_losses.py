"""The primer's losses (naive formulas by hand) and its target/input encoding."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mnist_jax.data import preprocess
from mnist_jax.errors import UserError
from mnist_jax.nn import losses

LOGITS = [[1.0, 2.0, 0.5], [-1.0, 0.0, 3.0]]
LABELS = [1, 0]


def _naive(logits, label):
  """The primer's formulas, written out with plain math on moderate values."""
  e = [math.exp(z) for z in logits]
  p = [v / sum(e) for v in e]                       # softmax
  s = [1 / (1 + math.exp(-z)) for z in logits]      # σ, one-vs-rest
  y = [1.0 if k == label else 0.0 for k in range(len(logits))]
  k = len(logits)
  return {
      'cce': -sum(yk * math.log(pk) for yk, pk in zip(y, p)),
      'bce': -sum(yk * math.log(sk) + (1 - yk) * math.log(1 - sk)
                  for yk, sk in zip(y, s)),
      'mse': sum((yk - pk) ** 2 for yk, pk in zip(y, p)) / k,
      'mae': sum(abs(yk - pk) for yk, pk in zip(y, p)) / k,
  }


@pytest.mark.parametrize('name', ['cce', 'bce', 'mse', 'mae'])
def test_matches_hand_computed(name):
  targets = preprocess.one_hot(jnp.array(LABELS), 3)
  got = losses.get(name)(jnp.array(LOGITS), targets)
  expected = [_naive(z, y)[name] for z, y in zip(LOGITS, LABELS)]
  assert got.shape == (2,)
  np.testing.assert_allclose(got, expected, rtol=1e-5)


@pytest.mark.parametrize('name', ['cce', 'bce', 'mse', 'mae'])
def test_finite_on_extreme_logits(name):
  logits = jnp.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 50.0]])
  targets = preprocess.one_hot(jnp.array([1, 1]), 3)
  fn = losses.get(name)
  value = fn(logits, targets)
  grad = jax.grad(lambda z: jnp.sum(fn(z, targets)))(logits)
  assert bool(jnp.all(jnp.isfinite(value))) and bool(jnp.all(jnp.isfinite(grad)))
  assert float(value[0]) > float(value[1])   # the wrong prediction costs more


def test_cce_extreme_values_are_exact():
  # −log softmax(z)_y = logsumexp(z) − z_y: 2e4 when the wrong class has 1e4.
  logits = jnp.array([[1e4, -1e4, 0.0]])
  cce = losses.get('cce')(logits, preprocess.one_hot(jnp.array([1]), 3))
  np.testing.assert_allclose(cce, [2e4], rtol=1e-6)


def test_perfect_prediction_costs_nothing():
  logits = jnp.array([[0.0, 60.0, 0.0]])
  targets = preprocess.one_hot(jnp.array([1]), 3)
  for name in ('cce', 'mse', 'mae'):
    assert float(losses.get(name)(logits, targets)[0]) < 1e-6


def test_unknown_loss_is_a_user_error():
  with pytest.raises(UserError, match='config.loss'):
    losses.get('hinge')


def test_one_hot_encoding():
  y = preprocess.one_hot(jnp.array([0, 3, 9]), 10)
  assert y.shape == (3, 10)
  np.testing.assert_array_equal(jnp.argmax(y, -1), [0, 3, 9])
  np.testing.assert_array_equal(y.sum(-1), [1, 1, 1])
  assert set(np.unique(np.asarray(y)).tolist()) == {0.0, 1.0}


def test_normalize_to_unit_interval():
  pixels = jnp.array([0, 1, 128, 255], jnp.uint8)
  x = preprocess.normalize(pixels)
  assert x.dtype == jnp.float32
  np.testing.assert_allclose(x, [0.0, 1 / 255, 128 / 255, 1.0], rtol=1e-6)
