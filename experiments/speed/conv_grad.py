"""Where the speedrun's convolutions lose time: the kernel gradient, and conv_impl='shift'.

  python -m experiments.speed.conv_grad [--batch=60] [--steps=200]

Part 1 times, in a standalone jit on one batch (ms per call, best of 3 repeats),
each 3x3 'SAME' convolution of configs/speedrun.py's SpeedNet:

  forward   lax.conv_general_dilated (what nn.Conv runs)
  dx        the input gradient, XLA's backward convolution
  dW xla    the kernel gradient, XLA's backward convolution
  dW shift  the kernel gradient as K·K matrix products of shifted views,
            dW[u, v] = x_pad[:, u:u+H, v:v+W, :].reshape(-1, C)ᵀ · dFM.reshape(-1, F)
            (nn/fast_layers.py's shift_conv2d), checked against 'dW xla'

Part 2 times the whole jitted train step of configs/speedrun.py (loop_mode='step')
with conv_impl 'xla' and 'shift', interleaved over 3 repeats (ms per step, best
repeat). Writes a markdown report to --out.
"""
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from experiments import report
from mnist_jax import train
from mnist_jax.config import files as config_files
from mnist_jax.nn import fast_layers

_BATCH = flags.DEFINE_integer('batch', 60, 'images per batch (the speedrun: 60)')
_STEPS = flags.DEFINE_integer('steps', 200, 'calls per measurement')
_OUT = flags.DEFINE_string('out', os.path.join(report.RESULTS, 'conv_grad.md'), 'report file')
LAYERS = ((28, 1, 16), (14, 16, 32), (7, 32, 64))   # (H = W, C, F) of SpeedNet's convs
PADS = ((1, 1), (1, 1))


def best_ms(fn, args, steps, repeats=3):
  fn = jax.jit(fn)
  jax.block_until_ready(fn(*args))               # compile
  best = float('inf')
  for _ in range(repeats):
    t = time.perf_counter()
    for _ in range(steps):
      out = fn(*args)
    jax.block_until_ready(out)
    best = min(best, (time.perf_counter() - t) / steps)
  return 1e3 * best


def layer_rows(batch, steps):
  rows = ['| layer (H, C → F) | forward | dx | dW xla | dW shift | dW xla / shift | max abs diff |',
          '|---|---:|---:|---:|---:|---:|---:|']
  for h, c, f in LAYERS:
    keys = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(keys[0], (batch, h, h, c))
    w = jax.random.normal(keys[1], (3, 3, c, f))
    dy = jax.random.normal(keys[2], (batch, h, h, f))
    xla = lambda x_, w_: fast_layers._xla_conv(x_, w_, PADS)  # pylint: disable=protected-access
    shift = lambda x_, w_: fast_layers.shift_conv2d(x_, w_, PADS)
    grad = lambda op, i: (lambda x_, w_, d_: jax.vjp(op, x_, w_)[1](d_)[i])
    ms = [best_ms(xla, (x, w), steps), best_ms(grad(xla, 0), (x, w, dy), steps),
          best_ms(grad(xla, 1), (x, w, dy), steps)]
    if c >= fast_layers.MIN_SHIFT_CHANNELS:
      ms.append(best_ms(grad(shift, 1), (x, w, dy), steps))
      diff = float(jnp.max(jnp.abs(jax.jit(grad(shift, 1))(x, w, dy) - grad(xla, 1)(x, w, dy))))
      tail = f'{ms[3]:.3f} | {ms[2] / ms[3]:.2f}x | {diff:.1e} |'
    else:
      tail = f'(XLA kept: C < {fast_layers.MIN_SHIFT_CHANNELS}) | | |'
    rows.append(f'| {h}x{h}, {c} → {f} | {ms[0]:.3f} | {ms[1]:.3f} | {ms[2]:.3f} | ' + tail)
    print(rows[-1], flush=True)
  return rows


def step_rows(steps):
  config = config_files.load(os.path.join(report.ROOT, 'configs', 'speedrun.py'))
  rs = np.random.RandomState(0)
  batch = {'image': jnp.asarray(rs.randint(0, 256, (config.batch_size, 28, 28, 1)), jnp.uint8),
           'label': jnp.asarray(rs.randint(0, 10, config.batch_size), jnp.int32)}
  runs, best = {}, {}
  for impl in ('xla', 'shift'):
    config.model.conv_impl = impl
    state = train.create_train_state(config, jax.random.key(0), num_train=55000)
    step = jax.jit(train.train_step)
    jax.block_until_ready(step(state, batch, jax.random.key(1)))   # compile
    runs[impl], best[impl] = (step, state), float('inf')
  for _ in range(3):                                  # interleaved repeats
    for impl, (step, state) in runs.items():
      t = time.perf_counter()
      for i in range(steps):
        state, _ = step(state, batch, jax.random.key(i))
      jax.block_until_ready(state)
      best[impl] = min(best[impl], (time.perf_counter() - t) / steps)
  b = config.batch_size
  return ['| conv_impl | ms/step | images/s |', '|---|---:|---:|'] + [
      f'| {impl} | {1e3 * s:.2f} | {b / s:,.0f} |' for impl, s in best.items()] + [
      '', f"shift / xla: {best['xla'] / best['shift']:.2f}x the images/s"]


def main(argv):
  del argv
  layers = layer_rows(_BATCH.value, _STEPS.value)
  steps = step_rows(_STEPS.value)
  report.write_markdown(_OUT.value, [
      "# The kernel gradient of the speedrun's convolutions (conv_impl='shift')", '',
      f'`{report.command()}`', '',
      f'{report.machine()} Load average at the end {os.getloadavg()[0]:.1f}.', '',
      f'Per convolution of SpeedNet, batch {_BATCH.value}, standalone jit, ms per call '
      '(best of 3 repeats):', '', *layers, '',
      "The whole train step of `configs/speedrun.py` (batch 60, loop_mode='step'), "
      f'{_STEPS.value} steps per repeat, best of 3 interleaved repeats:', '', *steps])


if __name__ == '__main__':
  app.run(main)
