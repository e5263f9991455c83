"""Where one jitted train step's time goes, op by op (the loop_mode='step' path).

  python -m experiments.speed.step_profile --config=configs/speedrun.py
  python -m experiments.speed.step_profile --config=configs/speed_record.py \\
      --config.model.conv_impl=shift        # any --config.<key>=<value>

Compiles ``jit(train.train_step)`` for the config on one random uint8 batch, runs
5 warm-up steps, then traces --steps steps with ``jax.profiler`` and prints the
wall time per step, images/s, and the HLO ops (thunks) with the most time per
step, each with its jax name stack (``jvp(...)`` = forward, ``transpose(...)`` =
backward). ``python -m experiments.speed.benchmark --profile`` does the same for
the lax.scan chunk of loop_mode='scan'.
"""
import collections
import glob
import gzip
import json
import os
import re
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from mnist_jax import train

_CONFIG = config_flags.DEFINE_config_file('config', 'configs/speedrun.py', 'Config file.')
_STEPS = flags.DEFINE_integer('steps', 30, 'Steps traced.')
_TOP = flags.DEFINE_integer('top', 15, 'HLO ops listed.')


def profile(config, steps: int, top: int) -> str:
  b = config.batch_size
  rng = np.random.default_rng(0)
  batch = {'image': jnp.asarray(rng.integers(0, 256, (b, 28, 28, 1), np.uint8)),
           'label': jnp.asarray(rng.integers(0, 10, b).astype(np.int32))}
  state = train.create_train_state(config, jax.random.key(0), num_train=55000)
  step = jax.jit(train.train_step, compiler_options=train.compiler_options(config))
  key = jax.random.key(1)
  for _ in range(5):
    state, _ = step(state, batch, key)
  jax.block_until_ready(state)
  hlo = step.lower(state, batch, key).compile().as_text()
  names = dict(re.findall(r'%?([\w.-]+) = [^\n]*?op_name="([^"]*)"', hlo))
  trace_dir = tempfile.mkdtemp(prefix='step_trace_')
  with jax.profiler.trace(trace_dir):
    t = time.perf_counter()
    for _ in range(steps):
      state, _ = step(state, batch, key)
    jax.block_until_ready(state)
    wall = time.perf_counter() - t
  path = glob.glob(os.path.join(trace_dir, '**', '*.trace.json.gz'), recursive=True)[0]
  with gzip.open(path) as f:
    events = json.load(f)
  events = events['traceEvents'] if isinstance(events, dict) else events
  by_op = collections.Counter()
  for e in events:
    if e.get('ph') == 'X' and e['name'] in names:
      by_op[e['name']] += e['dur'] / 1e3 / steps
  lines = [f'batch {b}: {1e3 * wall / steps:.2f} ms/step wall = {b * steps / wall:,.0f} '
           f'images/s; {sum(by_op.values()):.2f} ms/step in the traced HLO ops', '',
           '| ms/step | HLO op | jax name stack |', '|---:|---|---|']
  lines += [f'| {v:.3f} | {k} | {names[k].split("jit(train_step)/")[-1][:80]} |'
            for k, v in by_op.most_common(top)]
  return '\n'.join(lines)


def main(argv):
  del argv
  print(profile(_CONFIG.value, _STEPS.value, _TOP.value))


if __name__ == '__main__':
  app.run(main)
