"""Evaluation speed against the eval batch size (why configs/speedrun.py evaluates 500 at a time).

  python experiments/speed/eval_batch.py [--config=configs/speedrun.py] [--sizes=200,500,1000,2500]

Times jit(train.eval_step) over 15,000 images (the speedrun's validation + test
splits) for each batch size, interleaved over 3 repeats (best repeat), compilation
excluded, and prints images/s. Larger batches are not faster on a CPU once one
batch's activations overflow the caches (SpeedNet's first feature maps: B x 28 x
28 x 16 float32 = 50 MB at B = 1000).
"""
import os
import sys
import time

import jax
import jax.numpy as jnp
from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import hardware  # pylint: disable=g-import-not-at-top,wrong-import-position
from mnist_jax import train  # pylint: disable=wrong-import-position
from mnist_jax.config import defaults  # pylint: disable=wrong-import-position

_CONFIG = flags.DEFINE_string('config', 'configs/speedrun.py', 'Config file.')
_SIZES = flags.DEFINE_list('sizes', ['200', '500', '1000', '2500'], 'Eval batch sizes.')
IMAGES = 15000


def main(argv):
  del argv
  config = defaults.load(_CONFIG.value)
  state = train.create_train_state(config, jax.random.key(0), num_train=55000)
  step = jax.jit(train.eval_step)
  batches = {}
  for b in (int(s) for s in _SIZES.value):
    batches[b] = {'image': jnp.zeros((b, 28, 28, 1), jnp.uint8),
                  'label': jnp.zeros((b,), jnp.int32), 'mask': jnp.ones((b,))}
    jax.block_until_ready(step(state, batches[b]))            # compile
  best = {b: float('inf') for b in batches}
  for _ in range(3):
    for b, batch in batches.items():
      t = time.perf_counter()
      for _ in range(IMAGES // b):
        out = step(state, batch)
      jax.block_until_ready(out)
      best[b] = min(best[b], time.perf_counter() - t)
  print(f'{_CONFIG.value}, {hardware.describe()}: eval_step over {IMAGES:,} images')
  for b, s in best.items():
    print(f'  eval batch {b:5d}: {s:.2f} s = {IMAGES / s:,.0f} images/s')


if __name__ == '__main__':
  app.run(main)
