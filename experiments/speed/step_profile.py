"""Where one jitted train step's time goes, op by op (the loop_mode='step' path).

  python experiments/speed/step_profile.py --config=configs/speed_record.py --set=batch_size=128
  python experiments/speed/step_profile.py --config=configs/speedrun.py

Compiles ``jit(train.train_step)`` for the config on one random uint8 batch, runs
5 warm-up steps, then traces --steps steps with ``jax.profiler`` and prints the
wall time per step, images/s, and the HLO ops (thunks) with the most time per
step, each with its jax name stack (``jvp(...)`` = forward, ``transpose(...)`` =
backward). ``experiments/speed/benchmark.py --profile`` does the same for the lax.scan
chunk of loop_mode='scan'.
"""
import collections
import glob
import gzip
import json
import os
import re
import sys
import tempfile
import time

from absl import app, flags
import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # hardware
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # benchmark, beside this file
from benchmark import load_config  # pylint: disable=g-import-not-at-top,wrong-import-position
from mnist_jax import train  # pylint: disable=g-import-not-at-top,wrong-import-position

FLAGS = flags.FLAGS


def profile(config, steps: int, top: int) -> str:
  b = config.batch_size
  rng = np.random.default_rng(0)
  batch = {'image': jnp.asarray(rng.integers(0, 256, (b, 28, 28, 1), np.uint8)),
           'label': jnp.asarray(rng.integers(0, 10, b).astype(np.int32))}
  state = train.create_train_state(config, jax.random.key(0), num_train=55000)
  step, key = jax.jit(train.train_step), jax.random.key(1)
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
  print(profile(load_config(FLAGS.config, FLAGS.set), FLAGS.steps, FLAGS.top))


if __name__ == '__main__':
  flags.DEFINE_string('config', 'configs/speedrun.py', 'Config file.')
  flags.DEFINE_multi_string('set', [], "Config overrides 'key=value'.")
  flags.DEFINE_integer('steps', 30, 'Steps traced.')
  flags.DEFINE_integer('top', 15, 'HLO ops listed.')
  app.run(main)
