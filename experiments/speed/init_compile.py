"""What compiling a model's init at XLA's optimization level 1 saves, and that it changes nothing.

  python -m experiments.speed.init_compile [--configs=speedrun,lenet,googlenet]

For each config of configs/ (all of them by default), ``train.init_program`` (the
init of ``train.create_train_state``) is compiled in alternation over 3 repeats, with the
persistent cache off: at XLA:CPU's default level 3 and with
``train.once_compiler_options()`` (level 1 on the CPU). The table gives the best
compile time of each and whether the two programs give the same variables, bit for
bit. Writes a markdown report to --out.
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

_CONFIGS = flags.DEFINE_list('configs', None, 'config names under configs/ (default: all)')
_REPEATS = flags.DEFINE_integer('repeats', 3, 'compilations of each level, alternating')
_OUT = flags.DEFINE_string('out', os.path.join(report.RESULTS, 'init_compile.md'), 'report file')


def measure(name: str, repeats: int) -> str:
  config = config_files.load(os.path.join(report.ROOT, 'configs', f'{name}.py'))
  model = train.build_model(config)
  rngs, x = {'params': jax.random.key(0), 'dropout': jax.random.key(0)}, jnp.zeros((1, 28, 28, 1))
  levels = {'level 3 (default)': {'xla_backend_optimization_level': 3},
            'once_compiler_options()': train.once_compiler_options()}
  best, out = {k: float('inf') for k in levels}, {}
  for _ in range(repeats):
    for key, options in levels.items():
      # lowered afresh: a Lowered keeps what it compiled, and this times a compilation
      lowered = train.init_program(model, options).lower(rngs, x)
      start = time.perf_counter()
      compiled = lowered.compile()
      best[key] = min(best[key], time.perf_counter() - start)
      out[key] = jax.tree_util.tree_leaves(compiled(rngs, x))
  a, b = out.values()
  same = all(np.array_equal(np.asarray(u), np.asarray(v)) for u, v in zip(a, b))
  s3, s1 = best.values()
  return f'| {name} | {s3:.2f} | {s1:.2f} | {s3 / s1:.1f}x | {"yes" if same else "NO"} |'


def main(argv):
  del argv
  jax.config.update('jax_enable_compilation_cache', False)
  names = _CONFIGS.value or sorted(f[:-3] for f in os.listdir(os.path.join(report.ROOT, 'configs'))
                                   if f.endswith('.py'))
  lines = ['# Compiling a model\'s init at optimization level 1', '', f'`{report.command()}`', '',
           report.machine(), '',
           f'Best of {_REPEATS.value} compilations of each, alternating; options: '
           f'`{train.once_compiler_options()}`.', '',
           '| config | level 3 (s) | level 1 (s) | faster | same variables |',
           '|---|---:|---:|---:|---|']
  for name in names:
    lines.append(measure(name, _REPEATS.value))
    print(lines[-1], flush=True)
  report.write_markdown(_OUT.value, lines)


if __name__ == '__main__':
  app.run(main)
