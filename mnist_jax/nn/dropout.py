"""Dropout with its rate p an array or a number: nn.Dropout's rule for K models at once.

Dropout rate p (the primer's p, the fraction of units dropped): in training each
unit is kept with probability 1 − p and the kept ones are scaled so the expected
output is the input,

  m_i ~ Bernoulli(1 − p),   y_i = m_i · x_i / (1 − p);      in evaluation y = x.

flax's nn.Dropout holds p as a static setting, one number per compiled program.
``Dropout`` takes the same fields and call, and its ``rate`` may also be an array,
such as the p_k of trial k when K trials train as one program under ``jax.vmap``
(engine/stacked.py passes it through the model's ``dropout_rate`` argument). A
model gives p to it either way, so a trial computes what its own run computes:
1 − p is taken in float32 from a number and from an array alike, and the masks are
nn.Dropout's (the same key draws the same uniforms, kept where u < 1 − p).
"""
import jax
import jax.numpy as jnp
from flax import linen as nn


class Dropout(nn.Dropout):
  """nn.Dropout whose ``rate`` p may be a traced array (a per-trial p_k)."""

  @nn.compact
  def __call__(self, inputs, deterministic=None, rng=None):
    deterministic = nn.merge_param('deterministic', self.deterministic, deterministic)
    static = isinstance(self.rate, (int, float))
    if deterministic or (static and self.rate == 0.0):
      return inputs
    if static and self.rate == 1.0:   # nothing kept (and no 0/0 in the gradient)
      return jnp.zeros_like(inputs)
    keep = 1.0 - jnp.asarray(self.rate, jnp.float32)
    if rng is None:
      rng = self.make_rng(self.rng_collection)
    shape = [1 if d in self.broadcast_dims else s for d, s in enumerate(inputs.shape)]
    mask = jnp.broadcast_to(jax.random.bernoulli(rng, keep, shape), inputs.shape)
    return jax.lax.select(mask, inputs / keep.astype(inputs.dtype), jnp.zeros_like(inputs))
