"""The perceptron (Rosenblatt 1958): one layer of neurons on the 784 pixels.

Each output neuron k computes z_k = w_k · x + b_k over the flattened image
x ∈ R^784 (28 × 28), so the layer is Dense(784 -> 10): 7,840 weights + 10 biases.
It can only separate classes by hyperplanes (linearly separable data).

Two ways to train the same layer:

(a) Rosenblatt's perceptron learning rule with the step activation
    (``perceptron_rule_epoch``). The step 1[z >= 0] has derivative 0 almost
    everywhere, so gradient descent gets no signal through it; the rule instead
    updates on mistakes only. Multi-class form, prediction ŷ = argmax_k z_k:
        if ŷ != y:  w_y += η x,  b_y += η;   w_ŷ -= η x,  b_ŷ -= η.
    The one-vs-rest form uses the step literally, one binary perceptron per
    digit with target t_k = 1[k = y] and output o_k = step(z_k):
        w_k += η (t_k - o_k) x,  b_k += η (t_k - o_k).
    Run it with ``python -m experiments.concepts.perceptron_rule``.
(b) softmax + categorical cross-entropy by gradient descent: the normal
    trainer with ``configs/perceptron.py`` (``activation='identity'``: the
    logits z go straight to the loss, which applies the softmax).
"""
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from mnist_jax.nn import activations


class Perceptron(nn.Module):
  """Flatten -> Dense(num_classes) -> activation (identity: logits for the loss)."""
  num_classes: int = 10
  activation: str = 'identity'   # applied to z; the losses apply softmax / σ themselves
  leaky_alpha: float = 0.01
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train  # no dropout or batch norm in a single layer
    x = x.reshape((x.shape[0], -1)).astype(self.dtype)
    z = nn.Dense(self.num_classes, dtype=self.dtype, name='dense')(x)
    act = activations.get(self.activation, leaky_alpha=self.leaky_alpha)
    return act(z).astype(jnp.float32)


def _rule_update(params, x, y, lr, rule):
  """One example: (updated {'dense': {kernel, bias}}, whether it changed)."""
  kernel, bias = params['dense']['kernel'], params['dense']['bias']
  z = x @ kernel + bias
  num_classes = z.shape[-1]
  target = jax.nn.one_hot(y, num_classes, dtype=z.dtype)
  if rule == 'multiclass':
    y_hat = jnp.argmax(z)
    mistake = (y_hat != y).astype(z.dtype)
    # +η x on the true class, -η x on the predicted one, only on a mistake.
    delta = mistake * (target - jax.nn.one_hot(y_hat, num_classes, dtype=z.dtype))
  elif rule == 'one_vs_rest':
    delta = target - activations.step(z)          # t_k - o_k ∈ {-1, 0, 1}
  else:
    raise ValueError(f"rule must be 'multiclass' or 'one_vs_rest', got {rule!r}")
  new = {'kernel': kernel + lr * jnp.outer(x, delta), 'bias': bias + lr * delta}
  return {**params, 'dense': new}, jnp.any(delta != 0)


def perceptron_rule_epoch(params, images, labels, lr: float = 1.0,
                          rule: str = 'multiclass'):
  """One pass of the perceptron learning rule over (images, labels), in order.

  params: the Perceptron's ``variables['params']``; images: float (N, 28, 28, 1)
  (or (N, 784)); labels: int (N,). Scanned example by example with
  ``lax.scan`` (the rule is online); jit it with ``static_argnames='rule'``.
  Returns (params, mistakes): the updated params and the number of examples
  that triggered an update (for 'multiclass': misclassified ones).
  """
  x = images.reshape((images.shape[0], -1)).astype(jnp.float32)

  def body(p, xy):
    return _rule_update(p, xy[0], xy[1], lr, rule)

  params, changed = jax.lax.scan(body, params, (x, labels))
  return params, jnp.sum(changed)
