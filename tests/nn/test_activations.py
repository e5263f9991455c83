"""The primer's activation table, checked against hand-computed values."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mnist_jax.errors import UserError
from mnist_jax.nn import activations


def test_step_values():
  z = jnp.array([-2.0, -1e-6, 0.0, 1e-6, 3.0])
  np.testing.assert_array_equal(activations.step(z), [0, 0, 1, 1, 1])


def test_step_has_no_useful_gradient():
  grad = jax.grad(lambda z: jnp.sum(activations.step(z)))(jnp.array([-1.0, 0.5, 2.0]))
  np.testing.assert_array_equal(grad, [0, 0, 0])


def test_sigmoid_formula_and_range():
  # σ(z) = 1 / (1 + e^-z): σ(0) = 1/2, σ(2) = 1/(1 + e^-2).
  z = jnp.array([0.0, 2.0, -3.0])
  expected = [0.5, 1 / (1 + math.exp(-2)), 1 / (1 + math.exp(3))]
  np.testing.assert_allclose(activations.sigmoid(z), expected, rtol=1e-6)
  out = activations.sigmoid(jnp.linspace(-15, 15, 301))
  assert float(out.min()) > 0 and float(out.max()) < 1
  assert bool(jnp.all(jnp.diff(out) >= 0))   # monotone (float32 saturates near 1)


def test_tanh_formula_and_range():
  z = 1.0
  expected = (math.exp(z) - math.exp(-z)) / (math.exp(z) + math.exp(-z))
  np.testing.assert_allclose(activations.tanh(jnp.array(z)), expected, rtol=1e-6)
  out = activations.tanh(jnp.linspace(-5, 5, 101))
  assert float(out.min()) > -1 and float(out.max()) < 1
  np.testing.assert_allclose(out, -out[::-1], atol=1e-6)   # zero-centred, odd


def test_relu():
  np.testing.assert_array_equal(activations.relu(jnp.array([-2.0, 0.0, 3.5])),
                                [0.0, 0.0, 3.5])


@pytest.mark.parametrize('alpha', [0.01, 0.2])
def test_leaky_relu_slope(alpha):
  fn = activations.get('leaky_relu', leaky_alpha=alpha)
  np.testing.assert_allclose(fn(jnp.array([-2.0, 3.0])), [-2.0 * alpha, 3.0], rtol=1e-6)
  # max(αz, z): slope α for z < 0, 1 for z > 0.
  slopes = jax.vmap(jax.grad(fn))(jnp.array([-5.0, -0.1, 0.1, 5.0]))
  np.testing.assert_allclose(slopes, [alpha, alpha, 1.0, 1.0], rtol=1e-6)


def test_leaky_relu_default_alpha_is_primers():
  np.testing.assert_allclose(activations.get('leaky_relu')(jnp.array(-1.0)), -0.01)


def test_softmax_hand_values_and_sum():
  z = jnp.array([1.0, 2.0, 3.0])
  e = [math.exp(v) for v in (1, 2, 3)]
  np.testing.assert_allclose(activations.softmax(z), [v / sum(e) for v in e], rtol=1e-6)
  batch = jax.random.normal(jax.random.key(0), (5, 10)) * 4
  np.testing.assert_allclose(activations.softmax(batch).sum(-1), np.ones(5), rtol=1e-6)


def test_softmax_stable_for_large_z():
  big = activations.softmax(jnp.array([1000.0, 1001.0, 1002.0]))
  assert bool(jnp.all(jnp.isfinite(big)))
  np.testing.assert_allclose(big, activations.softmax(jnp.array([0.0, 1.0, 2.0])),
                             rtol=1e-6)


def test_swish_and_gelu():
  np.testing.assert_allclose(activations.get('swish')(jnp.array(1.0)),
                             1 / (1 + math.exp(-1)), rtol=1e-6)
  phi1 = 0.5 * (1 + math.erf(1 / math.sqrt(2)))     # Φ(1)
  np.testing.assert_allclose(activations.get('gelu')(jnp.array(1.0)), phi1, rtol=1e-6)


def test_every_name_resolves_and_unknown_is_a_user_error():
  for name in activations.ACTIVATIONS:
    assert jnp.isfinite(activations.get(name)(jnp.ones((2, 3)))).all()
  with pytest.raises(UserError, match='config.model.activation'):
    activations.get('relu6')
  with pytest.raises(UserError, match='leaky_alpha'):
    activations.get('leaky_relu', leaky_alpha=1.5)
