"""Why configs use conv_impl='auto' (patches + matmul on CPU): nn.Conv inside lax.scan.

  python -m experiments.speed.conv_in_scan [--configs=lenet,speedrun,alexnet,resnet] [--steps=10]

For each config and each convolution ('xla' = flax nn.Conv, 'patches' =
nn/fast_layers.py's im2col + matmul, the same function of the same parameters) it
times ``train.train_step`` on one batch of the config's size two ways:

  jit per step   a Python loop calling jax.jit(train_step) (one dispatch a step)
  lax.scan       ``--steps`` steps in one jit(lax.scan(...)), as engine/epoch.py runs an epoch

and prints ms per step (best of ``--repeats``, compilation excluded). On XLA:CPU
the convolutions of a while-loop body run far slower than the same ones in a
top-level computation (github.com/jax-ml/jax/issues/12868); patches + matmul
do not have this problem. Writes a markdown table to ``--out``.
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

_CONFIGS = flags.DEFINE_list('configs', ['lenet', 'speedrun', 'alexnet', 'resnet'],
                             'config names in configs/')
_STEPS = flags.DEFINE_integer('steps', 10, 'steps per measurement')
_REPEATS = flags.DEFINE_integer('repeats', 2, 'measurements; the fastest counts')
_OUT = flags.DEFINE_string('out', os.path.join(report.RESULTS, 'conv_in_scan.md'), 'table file')


def load(name):
  return config_files.load(os.path.join(report.ROOT, 'configs', f'{name}.py'))


def runners(config, steps):
  """(per-step loop, scan) callables that each run ``steps`` steps from ``state``."""
  rs = np.random.RandomState(0)
  batch = {'image': jnp.asarray(rs.rand(config.batch_size, 28, 28, 1), jnp.float32),
           'label': jnp.asarray(rs.randint(0, 10, config.batch_size), jnp.int32)}
  keys = jax.random.split(jax.random.key(1), steps)
  step = jax.jit(train.train_step)

  def per_step(state):
    for i in range(steps):
      state, _ = step(state, batch, keys[i])
    return state

  @jax.jit
  def scan(state):
    return jax.lax.scan(lambda s, k: train.train_step(s, batch, k), state, keys)[0]

  return {'jit per step': per_step, 'lax.scan': scan}


def best_ms(fn, state, steps, repeats):
  jax.block_until_ready(fn(state))            # compile
  best = float('inf')
  for _ in range(repeats):
    t = time.perf_counter()
    jax.block_until_ready(fn(state))
    best = min(best, time.perf_counter() - t)
  return 1000 * best / steps


def main(argv):
  del argv
  rows = ['| config | batch | conv | jit per step (ms/step) | lax.scan (ms/step) | '
          'scan / per step |', '|---|---:|---|---:|---:|---:|']
  for name in _CONFIGS.value:
    for impl in ('xla', 'patches'):
      config = load(name)
      config.model.conv_impl = impl
      with jax.threefry_partitionable(False):   # fast init compile (see test_zoo.py)
        state = train.create_train_state(config, jax.random.key(0), num_train=55_000)
      ms = {k: best_ms(fn, state, _STEPS.value, _REPEATS.value)
            for k, fn in runners(config, _STEPS.value).items()}
      rows.append(f"| `configs/{name}.py` | {config.batch_size} | {impl} | "
                  f"{ms['jit per step']:.1f} | {ms['lax.scan']:.1f} | "
                  f"{ms['lax.scan'] / ms['jit per step']:.2f}x |")
      print(rows[-1], flush=True)
  report.write_markdown(_OUT.value, [
      '# nn.Conv vs patches + matmul, per-step jit vs lax.scan', '',
      f'`{report.command()}`', '',
      f'{report.machine()} Load average at the end {os.getloadavg()[0]:.1f}.', '',
      'One train step (augmentation as in the config) on a fixed batch, '
      f'{_STEPS.value} steps per measurement, best of {_REPEATS.value}, '
      'compilation excluded.', '', *rows])


if __name__ == '__main__':
  app.run(main)
