"""K LeNet-5 trials trained vectorized (one program, jax.vmap) vs one after another.

  python -m experiments.speed.vectorized_speedup [--ks=1,4,8,16] [--steps=30] [--repeats=3]

The K trials differ in their learning rate η_k = η · 2^(k/4 − 2). Every side runs
the product's own epoch code (``engine.epoch.chunk_fn``, uint8 batches) on
``--steps`` steps of batch 128 (the same batch order) and takes the best of
``--repeats`` interleaved runs; compilation is excluded. Sequential time is
K x the time of one trial (η does not change it):

  sequential, sweep     what ``mnist_jax.sweep`` without --vectorize runs per
                        trial: the config as it is (configs/lenet.py: scan loop,
                        conv_impl='auto' = im2col + matmul on CPU), epoch.chunk_fn
                        of the one-model group step (stacked.create([config]))
  sequential, fastest   the fastest single-trial setting found for LeNet-5 on
                        this CPU: loop_mode='step' with conv_impl='xla' (nn.Conv)
  vectorized            epoch.chunk_fn of the K-model step (engine/stacked.py):
                        all K trials in one jit(scan(vmap)) with one seed, as a
                        sweep over η runs them (the batch and the step key are
                        shared: augmentation once per step)
  vectorized, K seeds   the same K trials with K different seeds: K batch orders
                        and K augmentations, nothing shared

Ratios are taken within one run, so a shared, noisy machine affects all sides.
Writes a markdown table to --out.
"""
import functools
import os
import time

import jax
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from experiments import report
from mnist_jax import parallel, train
from mnist_jax.data import idx
from mnist_jax.engine import epoch, stacked
from mnist_jax.search import hyper

_CONFIG = config_flags.DEFINE_config_file('config', 'configs/lenet.py', 'LeNet config',
                                          lock_config=False)
_KS = flags.DEFINE_list('ks', ['1', '4', '8', '16'], 'numbers of trials K')
_STEPS = flags.DEFINE_integer('steps', 30, 'training steps per measurement')
_REPEATS = flags.DEFINE_integer('repeats', 3, 'measurements; the fastest counts')
_DATA_DIR = flags.DEFINE_string('data_dir', 'tests/fixtures/mnist_small', 'IDX folder')
_SEEDS = flags.DEFINE_bool('seeds', True, "also time K trials with K seeds ('K seeds')")
_OUT = flags.DEFINE_string('out', 'experiments/results/vectorized_speedup.md', 'table file')
SIDES = {'sweep': 'sequential, sweep', 'fastest': 'sequential, fastest',
         'vec': 'vectorized', 'seeds': 'vectorized, K seeds'}


def best_times(fns: dict, repeats: int) -> dict:
  """Fastest of ``repeats`` runs of each fn, interleaved so load changes hit all."""
  for fn in fns.values():
    jax.block_until_ready(fn())  # compile
  times = {name: float('inf') for name in fns}
  for _ in range(repeats):
    for name, fn in fns.items():
      t = time.perf_counter()
      jax.block_until_ready(fn())
      times[name] = min(times[name], time.perf_counter() - t)
  return times


def _runner(run, state, *args):
  """A no-argument fn: one chunk from the state the previous call left (the
  engine donates the state off CPU, so it is never reused)."""
  box = [state]

  def fn():
    box[0], metrics = run(box[0], *args)
    return metrics

  return fn


def group_fn(configs, images, labels, order, key, mode='scan'):
  """A no-argument fn running the steps of K ≥ 2 trials with the engine's epoch
  code (epoch.chunk_fn of the stacked step, engine/stacked.py)."""
  group, mesh = stacked.create(configs, num_train=len(labels)), parallel.make_mesh(1)
  state = parallel.replicate(group.state, mesh)  # placed as the trainer places it (a
  run = epoch.chunk_fn(                          # host state would recompile on call 2)
      functools.partial(stacked.step, dropout_rate=group.dropout_rate), mesh,
      per_model=not group.shared_data, mode=mode)
  if group.shared_data:
    return _runner(run, state, images, labels, order, key, 0, len(order))
  k = len(configs)
  orders = np.stack([np.random.default_rng(i).permutation(order.ravel()).reshape(order.shape)
                     for i in range(k)])
  return _runner(run, state, images, labels, orders, jax.random.split(key, k), 0, len(order))


def sequential(config, images, labels, order, key):
  """One trial's steps, as the trainer runs them (the config's loop_mode)."""
  mesh = parallel.make_mesh(1)
  state = parallel.replicate(train.create_train_state(
      config, jax.random.split(jax.random.key(config.seed))[0], num_train=len(labels)), mesh)
  run = epoch.chunk_fn(train.train_step, mesh, mode=config.loop_mode)
  return _runner(run, state, images, labels, order, key, 0, len(order))


def vectorized_fn(configs, images, labels, order, key):
  """K trials' steps in one program (as ``mnist_jax.sweep --vectorize`` trains them)."""
  return group_fn(configs, images, labels, order, key)


def table(rows) -> list:
  """The markdown table: seconds per side, the two speed-ups, ms per trial-step."""
  sides = [s for s in SIDES if s in rows[0][1]]
  head = ' | '.join(f'{SIDES[s]} (s)' for s in sides)
  ratios = ' | '.join(f'speed-up vs {SIDES[s]}' for s in ('sweep', 'fastest'))
  lines = [f'| K | {head} | {ratios} | vectorized ms/step/trial |',
           '|---' * (len(sides) + 4) + '|']
  for k, t in rows:
    cells = ' | '.join(f'{t[s]:.2f}' for s in sides)
    lines.append(f"| {k} | {cells} | {t['sweep'] / t['vec']:.2f}x | "
                 f"{t['fastest'] / t['vec']:.2f}x | "
                 f"{1000 * t['vec'] / (k * _STEPS.value):.1f} |")
  return lines


def main(argv):
  del argv
  base = _CONFIG.value
  images, labels = idx.load_split(_DATA_DIR.value, 'train')
  order = np.random.default_rng(0).integers(0, len(labels), (_STEPS.value, base.batch_size))
  images, labels = parallel.replicate((images, labels), parallel.make_mesh(1))
  key = jax.random.key(1)
  fastest = hyper.apply(base, {'loop_mode': 'step', 'model.conv_impl': 'xla'})
  one = {'sweep': sequential(base, images, labels, order, key),
         'fastest': sequential(fastest, images, labels, order, key)}
  rows = []
  for k in [int(k) for k in _KS.value]:
    configs = [hyper.apply(base, {'learning_rate': base.learning_rate * 2 ** (i / 4 - 2)})
               for i in range(k)]
    fns = dict(one, vec=vectorized_fn(configs, images, labels, order, key))
    if _SEEDS.value:
      seeded = [hyper.apply(c, {'seed': i}) for i, c in enumerate(configs)]
      fns['seeds'] = vectorized_fn(seeded, images, labels, order, key)
    t = best_times(fns, _REPEATS.value)
    t['sweep'], t['fastest'] = k * t['sweep'], k * t['fastest']  # one after another
    rows.append((k, t))
    print(f'K={k}: ' + ', '.join(f'{SIDES[s]} {v:.2f} s' for s, v in t.items()) +
          f" -> {t['sweep'] / t['vec']:.2f}x / {t['fastest'] / t['vec']:.2f}x", flush=True)
  lines = [
      '# Vectorized LeNet-5 trials vs one after another', '',
      f'`{report.command()}`', '',
      f'{report.machine()} Load average at the end {os.getloadavg()[0]:.1f} (a shared '
      'machine: compare ratios, not seconds).', '',
      f'{_STEPS.value} steps of batch {base.batch_size} per trial (augmentation on, as in '
      f'configs/lenet.py), best of {_REPEATS.value}; sequential time = K x one trial; '
      'compile excluded. See the docstring of experiments/speed/vectorized_speedup.py for '
      'what each column runs.', '']
  lines += table(rows)
  report.write_markdown(_OUT.value, lines)


if __name__ == '__main__':
  app.run(main)
