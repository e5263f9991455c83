"""K LeNet-5 trials trained vectorized (one program, jax.vmap) vs one after another.

  python experiments/vectorized_speedup.py [--ks=1,4,8,16] [--steps=20] [--repeats=3]

The K trials differ in their learning rate (same seed, so they share the batches,
as in a typical sweep). Each measurement runs ``--steps`` training steps of batch
128 as one jit(scan(...)) dispatch, exactly like loop.py, and takes the best of
``--repeats`` (interleaved); compilation is excluded. Sequential time
is K x the time of one trial. Three ways:

  sequential (xla)      K x train.train_step, LeNet with conv_impl='xla' (nn.Conv)
  sequential (patches)  the same with conv_impl='patches' (im2col + matmul)
  vectorized            vectorized.train_step: all K at once (patches conv)

Ratios are taken within one run, so a shared, noisy machine affects both sides.
Writes a markdown table to --out.
"""
import os
import shlex
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# pylint: disable=g-import-not-at-top,wrong-import-position
import hardware
from mnist_jax import hyper, train, vectorized
from mnist_jax.data import idx, preprocess
# pylint: enable=g-import-not-at-top,wrong-import-position

_CONFIG = config_flags.DEFINE_config_file('config', 'configs/lenet.py', 'LeNet config',
                                          lock_config=False)
_KS = flags.DEFINE_list('ks', ['1', '4', '8', '16'], 'numbers of trials K')
_STEPS = flags.DEFINE_integer('steps', 20, 'training steps per measurement')
_REPEATS = flags.DEFINE_integer('repeats', 3, 'measurements; the fastest counts')
_DATA_DIR = flags.DEFINE_string('data_dir', 'tests/fixtures/mnist_small', 'IDX folder')
NOTE = (
    "Reading: 'vs nn.Conv' is what vmap + im2col gains over trials run one after "
    "another with conv_impl='xla' (flax nn.Conv); 'vs patches' is what vmap itself "
    'adds once both sides use the same im2col + matmul convolution. On this 2-core '
    "CPU nearly all of the gain is the convolution formulation: XLA:CPU's convolution"
    ' kernels are the slow part of LeNet training, and K trials in one vmap run at '
    'about the per-trial speed of one patches trial (the cores are already busy). '
    'Vectorizing still compiles once for K trials instead of once per trial.')

_OUT = flags.DEFINE_string('out', 'experiments/results/vectorized_speedup.md', 'table file')


def chunk(step_fn, images, labels, order):
  """jit(scan(step)) over the fixed batch order, as loop.py runs an epoch."""

  def run(state, rngs, *extra):
    def body(state, inputs):
      i, batch_idx = inputs
      batch = {'image': preprocess.normalize(images[batch_idx]), 'label': labels[batch_idx]}
      step_rngs = (jax.vmap(jax.random.fold_in, (0, None))(rngs, i) if rngs.ndim
                   else jax.random.fold_in(rngs, i))
      return step_fn(state, batch, step_rngs, *extra)

    state, metrics = jax.lax.scan(body, state, (jnp.arange(order.shape[0]), order))
    return state, metrics['loss']

  return jax.jit(run)


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


def main(argv):
  del argv
  base = _CONFIG.value
  images, labels = idx.load_split(_DATA_DIR.value, 'train')
  order = np.random.default_rng(0).integers(0, len(labels), (_STEPS.value, base.batch_size))
  images, labels, order = jnp.asarray(images), jnp.asarray(labels), jnp.asarray(order)
  rng = jax.random.key(1)
  seq = {}
  for impl in ('xla', 'patches'):
    config = hyper.apply(base, {'model.conv_impl': impl})
    state = train.create_train_state(config, jax.random.key(0), num_train=len(labels))
    run = chunk(train.train_step, images, labels, order)
    seq[impl] = (run, state)
  rows = []
  for k in [int(k) for k in _KS.value]:
    configs = [hyper.apply(base, {'learning_rate': base.learning_rate * 2 ** (i / 4 - 2)})
               for i in range(k)]
    group = vectorized.create(configs, num_train=len(labels))
    vrun = chunk(vectorized.train_step, images, labels, order)
    rngs = jax.random.split(rng, k)
    fns = {impl: (lambda r=run, s=state: r(s, rng)) for impl, (run, state) in seq.items()}
    fns['vec'] = lambda: vrun(group.states, rngs, group.keep)
    t = best_times(fns, _REPEATS.value)
    t['xla'], t['patches'] = k * t['xla'], k * t['patches']  # K trials, one after another
    rows.append((k, t))
    print(f"K={k}: sequential xla {t['xla']:.2f} s, patches {t['patches']:.2f} s, "
          f"vectorized {t['vec']:.2f} s -> {t['xla'] / t['vec']:.2f}x / "
          f"{t['patches'] / t['vec']:.2f}x", flush=True)
  steps = _STEPS.value
  lines = [
      '# Vectorized LeNet-5 trials vs one after another', '',
      f'`python {" ".join(shlex.quote(a) for a in sys.argv)}`', '',
      f'Hardware: {hardware.describe()}; load average at the end '
      f'{os.getloadavg()[0]:.1f} (shared machine: compare ratios, not seconds).', '',
      f'{steps} steps of batch {base.batch_size} per trial, best of {_REPEATS.value}; '
      'sequential time = K x one trial (compile excluded).', '',
      '| K | sequential, nn.Conv (s) | sequential, patches (s) | vectorized (s) '
      '| speed-up vs nn.Conv | speed-up vs patches | vectorized ms/step/trial |',
      '|---|---|---|---|---|---|---|']
  for k, t in rows:
    lines.append(f"| {k} | {t['xla']:.2f} | {t['patches']:.2f} | {t['vec']:.2f} | "
                 f"{t['xla'] / t['vec']:.2f}x | {t['patches'] / t['vec']:.2f}x | "
                 f"{1000 * t['vec'] / (k * steps):.1f} |")
  lines += ['', NOTE]
  os.makedirs(os.path.dirname(_OUT.value) or '.', exist_ok=True)
  with open(_OUT.value, 'w') as f:
    f.write('\n'.join(lines) + '\n')
  print('\n'.join(lines))


if __name__ == '__main__':
  app.run(main)
