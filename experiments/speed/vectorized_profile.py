"""Why K vmapped LeNet-5 trials are not K times cheaper on a 2-core CPU.

  python experiments/speed/vectorized_profile.py [--k=16] [--steps=10] [--repeats=3]

Times the forward + backward pass alone (no augmentation, no optimizer: one
SGD update w ← w − 10⁻⁴ g per step inside a lax.scan, as engine/driver.py runs it) of

  sequential   one LeNet-5 (configs/lenet.py) on a batch of 128
  vmapped      K LeNet-5s on the same batch, jax.vmap over stacked parameters
               (what engine/stacked.py runs), reported per trial

with C3 (6 -> 16 channels, 5x5, VALID) computed two ways:

  im2col       the product's PatchConv: patches (B, 10, 10, 150) @ W (150, 16)
  toeplitz     rows of 5 input rows @ a block-Toeplitz weight (270, 80) per 5
               output columns: ~1.8x the multiply-adds, ~4x less patch memory

If the vmapped per-trial time is about the sequential time, vectorizing can only
save the work its trials share (augmentation, the input's patches, dispatch),
whatever the convolution. Same parameters and gradients up to float rounding
(checked here). Writes a markdown table to --out.
"""
import functools
import os
import shlex
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from flax import linen as nn
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# pylint: disable=g-import-not-at-top,wrong-import-position
import hardware
import report
from mnist_jax import train
from mnist_jax.data import idx, preprocess
from mnist_jax.nn import fast_layers
from mnist_jax.search import hyper
# pylint: enable=g-import-not-at-top,wrong-import-position

_CONFIG = config_flags.DEFINE_config_file('config', 'configs/lenet.py', 'LeNet config')
_K = flags.DEFINE_integer('k', 16, 'vmapped trials')
_STEPS = flags.DEFINE_integer('steps', 10, 'steps per measurement')
_REPEATS = flags.DEFINE_integer('repeats', 3, 'measurements; the fastest counts')
_OUT = flags.DEFINE_string('out', 'experiments/results/vectorized_profile.md', 'table file')


def toeplitz_conv(x, kernel, chunk: int = 5):
  """VALID stride-1 conv: y[n, i, j·chunk + o] = rows(x)[n, i, j] @ T, with
  T[(u, col, c), (o, f)] = W[u, col − o, c, f] (0 outside the kernel)."""
  kh, kw, c, f = kernel.shape
  n, h, w, _ = x.shape
  ho, wo = h - kh + 1, w - kw + 1
  win, nch = chunk + kw - 1, wo // chunk
  sel = np.zeros((win, chunk, kw), np.float32)
  for o in range(chunk):
    for v in range(kw):
      sel[o + v, o, v] = 1
  t = jnp.einsum('iov,uvcf->uicof', sel, kernel).reshape(kh * win * c, chunk * f)
  rows = jnp.stack([x[:, u:u + ho] for u in range(kh)], axis=2)       # (n, ho, kh, w, c)
  cols = jnp.stack([rows[:, :, :, j * chunk:j * chunk + win] for j in range(nch)], 2)
  y = jnp.dot(cols.reshape(n * ho * nch, kh * win * c), t)
  return y.reshape(n, ho, wo, f)


class ToeplitzC3(fast_layers.PatchConv):
  """PatchConv's parameters; VALID convolutions with ≥ 6 input channels as toeplitz_conv."""

  @nn.compact
  def __call__(self, inputs):
    x, kernel, bias = self._variables(inputs)
    if self.padding == 'VALID' and x.shape[-1] >= 6:
      return toeplitz_conv(x, kernel) + bias
    patches = fast_layers.extract_patches(x, kernel.shape[:2], padding=self.padding)
    return jnp.dot(patches, kernel.reshape(-1, self.features)) + bias


def loss_fn(model, params, x, y):
  logits = model.apply({'params': params}, x, train=False)
  return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], -1))


def scanned(loss, steps):
  """jit(scan) of `steps` SGD steps on one batch: the driver's structure."""
  @jax.jit
  def run(params, x, y):
    def body(p, i):
      g = jax.grad(loss)(p, x + i * 1e-6, y)
      return jax.tree_util.tree_map(lambda a, b: a - 1e-4 * b, p, g), None
    return jax.lax.scan(body, params, jnp.arange(steps))[0]
  return run


def main(argv):
  del argv
  k, steps = _K.value, _STEPS.value
  images, labels = idx.load_split('tests/fixtures/mnist_small', 'train')
  x = preprocess.normalize(jnp.asarray(images[:128]))
  y = jnp.asarray(labels[:128])
  config = hyper.apply(_CONFIG.value, {'model.conv_impl': 'patches'})
  models = {'im2col': train.build_model(config)}
  models['toeplitz'] = models['im2col'].clone(conv=ToeplitzC3)
  keys = jax.random.split(jax.random.key(0), k)
  stacked = jax.vmap(lambda r: models['im2col'].init(r, x[:1])['params'])(keys)
  one = jax.tree_util.tree_map(lambda a: a[0], stacked)
  fns, grads = {}, {}
  for conv, model in models.items():
    loss = functools.partial(loss_fn, model)
    vloss = lambda p, x, y, loss=loss: jnp.sum(jax.vmap(loss, (0, None, None))(p, x, y))
    fns[('sequential', conv)] = (scanned(loss, steps), one, 1)
    fns[('vmapped', conv)] = (scanned(vloss, steps), stacked, k)
    grads[conv] = jax.jit(jax.grad(vloss))(stacked, x, y)
  diff = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(
      jax.tree_util.tree_leaves(grads['im2col']), jax.tree_util.tree_leaves(grads['toeplitz'])))
  for fn, p, _ in fns.values():
    jax.block_until_ready(fn(p, x, y))
  ms = {name: float('inf') for name in fns}
  for _ in range(_REPEATS.value):
    for name, (fn, p, n) in fns.items():
      t = time.perf_counter()
      jax.block_until_ready(fn(p, x, y))
      ms[name] = min(ms[name], 1000 * (time.perf_counter() - t) / (steps * n))
  lines = [
      '# Forward + backward per LeNet-5 trial: sequential vs vmapped', '',
      f'`python {" ".join(shlex.quote(a) for a in sys.argv)}`', '',
      f'Hardware: {hardware.describe()}; load average at the end {os.getloadavg()[0]:.1f}.',
      '', f'Batch 128, {steps} SGD steps in one jit(scan), best of {_REPEATS.value}; '
      f'vmapped = K = {k} trials on the same batch, time divided by K. Largest gradient '
      f'difference im2col vs toeplitz: {diff:.1e}.', '',
      '| C3 as | sequential (ms/step) | vmapped (ms/step/trial) | vmapped / sequential |',
      '|---|---|---|---|']
  for conv in models:
    s, v = ms[('sequential', conv)], ms[('vmapped', conv)]
    lines.append(f'| {conv} | {s:.2f} | {v:.2f} | {v / s:.2f} |')
  report.write_markdown(_OUT.value, lines)


if __name__ == '__main__':
  app.run(main)
