"""Speed of a config, end to end: from process start to the first evaluation at
>= 99 % test accuracy, with compile time, steady-state images/s and FLOP/s.

  python -m experiments.speed.benchmark --config=configs/speedrun.py \\
      --data_dir=$MNIST_DIR --runs=3 --loops=scan,naive \\
      --out=experiments/results/benchmark.md

Each run is a fresh process, timed by the parent from just before it starts:
'scan' runs ``python -m mnist_jax.main --compilation_cache=off`` (the config's
loop, cold: every program compiled), 'warm' the same with a persistent
compilation cache that one untimed run filled first (store/compile_cache.py:
the second run on a machine), 'naive' runs ``python -m experiments.speed.naive_loop``
(one host batch and one jit dispatch per step), and with ``--pytorch_python=PY`` (an
interpreter with torch and absl-py) 'torch_record' / 'torch_examples' run
``PY -m experiments.speed.pytorch_reference --recipe=record / examples`` (the fastest
published recipe; the PyTorch examples/mnist one). All loops run interleaved,
run 1 of each, then run 2, ..., so a change in the machine's load hits all.
The comparison is on the record recipe's own terms, test accuracy after
every epoch: our loops run with ``--config.eval_test_every_epoch=True`` (a
run reads the test split only at the end otherwise), so each epoch's test
evaluation is inside the times below, as it is in the recipes'. Nothing is
chosen on these test figures; choices are made on validation. The child logs
with ``JAX_LOG_COMPILES=1``; the parent timestamps every line it prints and
reads ``WORKDIR/metrics.jsonl`` at the end:

  time to target  the 'epoch e/E:' line of the first epoch whose test accuracy
                  is >= --target (imports, data, compiles, eval, checkpoint included;
                  --stop_at_target ends the run there)
  compile         Σ of JAX's 'Finished tracing / MLIR conversion / XLA
                  compilation ... in t sec' lines (reported apart, also included above)
  startup         process start -> the loop's 'Training ...' line
                  (interpreter, imports, data load, model init)
  steady img/s    median images/s of epochs >= 2; with one epoch, the rate
                  between progress lines with no compile in between
  GFLOP/s         steady img/s × XLA's cost analysis of jit(train_step) per
                  image (≈ 6 × the model's forward MACs, mnist_jax.inspection.explain)
  cores used      the child's CPU seconds (user + sys) / its wall time
  load            the 1-minute load average as the run started (is the CPU shared?)

The report gives each of our loops' median time to target against the
PyTorch recipes' medians.

Peak FLOP/s = cores × fp32 FMA per core per cycle × 2 FLOP × clock ('cpu MHz'
of /proc/cpuinfo); the line printed says how it was computed. Medians over
--runs. Device-agnostic: the children use JAX's default backend (set
JAX_PLATFORMS=cuda on a GPU machine); the CPU peak is then not the right ceiling.
"""
import ast
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from absl import app, flags

from experiments import report

NAIVE = 'experiments.speed.naive_loop'
REFERENCE = 'experiments.speed.pytorch_reference'
REFERENCE_RE = re.compile(r'epoch (\d+): test accuracy ([0-9.]+) %')
REFERENCE_RATE_RE = re.compile(r'\((\d+) images/s\)')
FLAGS = flags.FLAGS
WARM_CACHE = os.path.join(tempfile.gettempdir(), 'mnist_jax_benchmark_xla_cache')
TORCH_LOOPS = {'torch_record': 'record', 'torch_examples': 'examples'}
COMPILE_RE = re.compile(r'Finished (?:tracing|jaxpr to MLIR module conversion|XLA '
                        r'compilation)\b.* in ([0-9.eE+-]+) sec')
PROGRESS_RE = re.compile(r'epoch (\d+): (\d+)/(\d+) steps')
EPOCH_RE = re.compile(r'epoch (\d+)/(\d+): ')
DATA_RE = re.compile(r'Data: .* read in ([0-9.]+) s')
SETUP_RE = re.compile(r'\(set up in ([0-9.]+) s\)')
PHASES = ('imports', 'data', 'setup', 'train', 'eval')


def cpu_peak(fma_per_cycle: int = 0) -> dict:
  """Theoretical fp32 (and bf16) FLOP/s of this CPU, with the formula used."""
  info = {}
  with open('/proc/cpuinfo') as f:
    for line in f:
      key, _, value = line.partition(':')
      info.setdefault(key.strip(), value.strip())
  cpu_flags = set(info.get('flags', '').split())
  cores, ghz = len(os.sched_getaffinity(0)), float(info.get('cpu MHz', 0)) / 1000
  lanes = 16 if 'avx512f' in cpu_flags else 8 if 'avx2' in cpu_flags else 4
  if not fma_per_cycle:  # two FMA pipes; AMD Zen 4 (family 25) splits 512-bit ops
    amd_zen4 = info.get('vendor_id') == 'AuthenticAMD' and info.get('cpu family') == '25'
    fma_per_cycle = 2 * (8 if amd_zen4 else lanes)
  fp32 = cores * fma_per_cycle * 2 * ghz
  bf16 = 2 * fp32 if 'avx512_bf16' in cpu_flags else None
  how = (f"{info.get('model name')} (family {info.get('cpu family')}): {cores} cores x "
         f'{fma_per_cycle} fp32 FMA/cycle (2 pipes x {lanes} AVX lanes) x 2 FLOP x '
         f'{ghz:.3f} GHz = {fp32:.0f} GFLOP/s fp32'
         + (f'; avx512_bf16 dot products: {bf16:.0f} GFLOP/s bf16' if bf16 else ''))
  return {'fp32': fp32, 'bf16': bf16, 'how': how}


def load_config(path: str, overrides):
  """The config of ``path`` (``get_config()``) with 'key=value' overrides applied."""
  from mnist_jax.config import files as config_files  # pylint: disable=g-import-not-at-top
  config = config_files.load(os.path.join(report.ROOT, path))
  for item in overrides:
    key, value = item.split('=', 1)
    try:
      value = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      pass
    config.update_from_flattened_dict({key: value})
  return config


def model_cost(config) -> dict:
  """Forward MACs per image (explain.explain) and XLA's FLOPs of one train step."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from mnist_jax import train  # pylint: disable=g-import-not-at-top
  from mnist_jax.inspection import explain  # pylint: disable=g-import-not-at-top
  state = train.create_train_state(config, jax.random.key(0), num_train=55_000)
  macs = sum(r.macs for r in explain.explain(state.model))
  b = config.batch_size
  batch = {'image': jnp.zeros((b, 28, 28, 1)), 'label': jnp.zeros((b,), jnp.int32)}
  cost = jax.jit(train.train_step).lower(state, batch, jax.random.key(1)).compile()
  cost = cost.cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  a = jnp.ones((2048, 2048))
  mm = jax.jit(lambda a: a @ a)
  mm(a).block_until_ready()
  t = time.perf_counter()
  for _ in range(5):
    mm(a).block_until_ready()
  matmul = 5 * 2 * 2048 ** 3 / (time.perf_counter() - t) / 1e9
  return {'macs': macs, 'train_flops': cost['flops'] / b, 'matmul_gflops': matmul,
          'backend': f'{jax.default_backend()} ({jax.devices()[0].device_kind})'}


def _children_cpu_s() -> float:
  """User + system CPU seconds of this process's finished children so far."""
  usage = resource.getrusage(resource.RUSAGE_CHILDREN)
  return usage.ru_utime + usage.ru_stime


def _read_records(workdir: str) -> list:
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(line) for line in f if line.strip()]


def run_once(loop: str, config_path: str, overrides, batch_size: int, target: float,
             timeout: float = 900, stop_at_target: bool = False) -> dict:
  """One fresh process of ``loop``; its timeline, parsed as it runs."""
  workdir = tempfile.mkdtemp(prefix=f'bench_{loop}_')
  cmd = ([sys.executable, '-m', NAIVE] if loop == 'naive' else
         [sys.executable, '-m', 'mnist_jax.main',
          f'--compilation_cache={WARM_CACHE if loop == "warm" else "off"}'])
  cmd += [f'--config={config_path}', f'--workdir={workdir}']
  if loop != 'naive':   # the record recipe's terms: test accuracy after every epoch
    cmd += ['--config.eval_test_every_epoch=True']
  cmd += [f'--config.{o}' for o in overrides]
  env = dict(os.environ, JAX_LOG_COMPILES='1', PYTHONUNBUFFERED='1')
  cpu0 = _children_cpu_s()
  load = os.getloadavg()[0]
  t0 = time.perf_counter()
  proc = subprocess.Popen(cmd, cwd=report.ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
  compile_s, startup, epochs, progress, compiles, tail = 0.0, None, {}, [], [], []
  phases = {}
  stopped = False
  timer = threading.Timer(timeout, proc.kill)
  timer.start()
  for line in proc.stdout:
    now = time.perf_counter() - t0
    tail = (tail + [line])[-20:]
    if m := COMPILE_RE.search(line):
      compile_s += float(m.group(1))
      compiles.append(now)
    elif m := PROGRESS_RE.search(line):
      progress.append((now, int(m.group(1)), int(m.group(2))))
    elif m := EPOCH_RE.search(line):
      epochs[int(m.group(1))] = now
      if stop_at_target and _read_records(workdir)[-1]['test_accuracy'] >= target:
        stopped = True
        proc.terminate()
    elif m := DATA_RE.search(line):
      phases['data'] = float(m.group(1))
      phases['imports'] = now - phases['data']   # process start -> the data read begins
    elif startup is None and 'Training ' in line:
      startup = now
      if m := SETUP_RE.search(line):
        phases['setup'] = float(m.group(1))
  returncode = proc.wait()
  wall = time.perf_counter() - t0
  timer.cancel()
  if returncode != 0 and not stopped:
    raise RuntimeError(f'{" ".join(cmd)} failed:\n{"".join(tail)}')
  records = _read_records(workdir)
  shutil.rmtree(workdir, ignore_errors=True)
  hit = next((r for r in records if r['test_accuracy'] >= target), None)
  rates = [r['images_per_s'] for r in records[1:]]
  if not rates:  # one epoch: between progress lines that saw no compile
    rates = [(s2 - s1) * batch_size / (t2 - t1)
             for (t1, e1, s1), (t2, e2, s2) in zip(progress, progress[1:])
             if e1 == e2 and not any(t1 < c <= t2 for c in compiles)]
  cpu = _children_cpu_s() - cpu0
  if records and 'eval_time_s' in records[0]:
    phases.update(train=records[0]['train_time_s'], eval=records[0]['eval_time_s'])
  return {'time_to_target': epochs[hit['epoch']] if hit else None, 'phases': phases,
          'epoch': hit['epoch'] if hit else None,
          'test_accuracy': hit['test_accuracy'] if hit else records[-1]['test_accuracy'],
          'val_accuracy': (hit or records[-1]).get('val_accuracy'),
          'compile_s': compile_s, 'startup_s': startup, 'wall_s': wall,
          'images_per_s': statistics.median(rates) if rates else None,
          'cores_used': cpu / wall, 'load': load}


def run_reference(python: str, recipe: str, data_dir: str, target: float, seed: int) -> dict:
  """``python -m experiments.speed.pytorch_reference --recipe=<recipe>`` in ``python``
  (an interpreter with torch), timed like run_once: from just before the process
  starts to the moment it prints its first test evaluation at >= ``target``."""
  cmd = [python, '-m', REFERENCE, f'--recipe={recipe}', f'--data_dir={os.path.abspath(data_dir)}',
         f'--target={target}', f'--seed={seed}']
  cpu0 = _children_cpu_s()
  load = os.getloadavg()[0]
  t0 = time.perf_counter()
  proc = subprocess.Popen(cmd, cwd=report.ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, env=dict(os.environ, PYTHONUNBUFFERED='1'))
  hit, last, accuracy, rate = None, '', None, None
  for line in proc.stdout:
    last = line.strip() or last
    m = REFERENCE_RE.search(line)
    if m:
      accuracy = float(m.group(2)) / 100
      rate = float(REFERENCE_RATE_RE.search(line).group(1))
      if hit is None and accuracy >= target:
        hit = {'time_to_target': time.perf_counter() - t0, 'epoch': int(m.group(1))}
  if proc.wait() != 0:
    raise RuntimeError(f'{" ".join(cmd)} failed: {last}')
  wall = time.perf_counter() - t0
  cpu = _children_cpu_s() - cpu0
  return {**(hit or {'time_to_target': None, 'epoch': None}), 'summary': last,
          'test_accuracy': accuracy, 'val_accuracy': None, 'compile_s': None,
          'startup_s': None, 'wall_s': wall, 'images_per_s': rate, 'phases': {},
          'cores_used': cpu / wall, 'load': load}


def _median(runs, key):
  values = [r[key] for r in runs if r[key] is not None]
  return statistics.median(values) if values else None


def _fmt(v, spec='.1f'):
  return '—' if v is None else format(v, spec)


def table(results, cost, peak, target) -> str:
  """The markdown table (one row per loop, medians) and the scan/naive ratios."""
  lines = [f'| loop | time to {100 * target:g} % (s) [min–max] | epoch | test acc. | '
           'compile (s) | startup (s) | steady img/s | GFLOP/s | % of peak | cores '
           'used | load | total wall (s) |', '|---|---|---|---|---|---|---|---|---|---|---|---|']
  for loop, runs in results.items():
    times = [r['time_to_target'] for r in runs if r['time_to_target'] is not None]
    span = f' [{min(times):.1f}–{max(times):.1f}]' if times else ''
    reached = f'{len(times)}/{len(runs)} runs' if len(times) < len(runs) else ''
    ips = _median(runs, 'images_per_s')
    gflops = ips * cost['train_flops'] / 1e9 if ips and loop not in TORCH_LOOPS else None
    lines.append(
        f"| {loop} | {_fmt(statistics.median(times) if times else None)}{span} {reached} | "
        f"{_fmt(_median(runs, 'epoch'), 'g')} | {_fmt(_median(runs, 'test_accuracy'), '.4f')} | "
        f"{_fmt(_median(runs, 'compile_s'))} | {_fmt(_median(runs, 'startup_s'))} | "
        f"{_fmt(ips, ',.0f')} | {_fmt(gflops)} | "
        f"{_fmt(gflops and 100 * gflops / peak['fp32'])} | "
        f"{_fmt(_median(runs, 'cores_used'), '.2f')} | {_fmt(_median(runs, 'load'))} | "
        f"{_fmt(_median(runs, 'wall_s'))} |")
  if {'scan', 'naive'} <= set(results):
    s, n = results['scan'], results['naive']
    for key, label, inverse in (('time_to_target', 'time to target', True),
                                ('images_per_s', 'steady images/s', False)):
      a, b = _median(s, key), _median(n, key)
      if a and b:
        lines.append(f'\nscan vs naive, {label}: {(b / a if inverse else a / b):.2f}x')
  with_phases = {loop: runs for loop, runs in results.items()
                 if any(r['phases'] for r in runs)}
  if with_phases:
    lines += ['', 'Phases, medians (s): imports = process start -> the data read; set-up = '
              'model, optimizer, checkpoints, eval splits; train and eval = epoch 1, '
              'compilation of their programs included (the compile column is that part, '
              'summed over all programs).', '',
              '| loop | ' + ' | '.join(PHASES) + ' | compile |', '|---|' + '---|' * 6]
    for loop, runs in with_phases.items():
      values = [statistics.median(v) if (v := [r['phases'][p] for r in runs
                                                 if p in r['phases']]) else None
                for p in PHASES]
      lines.append(f'| {loop} | ' + ' | '.join(_fmt(v, '.2f') for v in values) +
                   f" | {_fmt(_median(runs, 'compile_s'), '.2f')} |")
  for ours in ('scan', 'warm', 'naive'):
    for peer in TORCH_LOOPS:
      a = _median(results.get(ours, []), 'time_to_target')
      b = _median(results.get(peer, []), 'time_to_target')
      if a and b:
        lines.append(f'\n{ours} / {peer}, median time to target: {a:.1f} s / {b:.1f} s '
                     f'= {a / b:.2f}x')
  return '\n'.join(lines)


def _category(op_name: str) -> str:
  """'<layer>: <pass>' of an HLO op from its metadata op_name (jax's name stack):
  'transpose(jvp(...))' is the backward pass, 'jvp(...)' the forward (+ linearization)."""
  stage = 'backward' if 'transpose(' in op_name else 'forward'
  model = re.search(r'jvp\((\w+)\)\)?/(.*)', op_name)
  if not model:
    return 'loss, optimizer, batch gather'
  layer, _, op = model.group(2).partition('/')
  if not op:  # an op between layers: pooling (its jvp: eq, reduce_sum) or relu
    op, layer = layer, 'model (other)'
    if op in ('reduce_max', 'eq', 'reduce_sum', 'convert_element_type') or 'window' in op:
      layer = 'max-pool'
  if 'relu' in layer or layer in ('gt', 'select_n'):
    layer = 'relu'
  return f'{layer}: {stage}'


def profile(config, steps: int = 20) -> str:
  """Where a train step's time goes: a jax.profiler trace of ``steps`` steps of
  the loop's own compiled scan chunk, thunk times grouped by layer and pass."""
  import collections  # pylint: disable=g-import-not-at-top
  import glob  # pylint: disable=g-import-not-at-top
  import gzip  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from mnist_jax import parallel  # pylint: disable=g-import-not-at-top
  from mnist_jax import train  # pylint: disable=g-import-not-at-top
  from mnist_jax.engine import epoch  # pylint: disable=g-import-not-at-top
  mesh = parallel.make_mesh(config.num_devices)
  n, b = steps * config.batch_size, config.batch_size
  state = parallel.replicate(train.create_train_state(config, jax.random.key(0), num_train=n),
                             mesh)
  rng = np.random.default_rng(0)
  images, labels = parallel.replicate((rng.integers(0, 256, (n, 28, 28, 1), np.uint8),
                                       rng.integers(0, 10, n).astype(np.int32)), mesh)
  idx = jax.numpy.arange(n).reshape(steps, b)
  chunk = epoch.chunk_fn(train.train_step, mesh,  # uint8 batches, as the trainer feeds
                         compiler_options=train.compiler_options(config))
  args = (images, labels, idx, jax.random.key(1), 0, steps)
  state = jax.block_until_ready(chunk(state, *args))[0]   # compile + warm up (the
  hlo = chunk.lower(state, *args).compile().as_text()     # state is donated off CPU)
  names = dict(re.findall(r'%?([\w.-]+) = [^\n]*?op_name="([^"]*)"', hlo))
  trace_dir = tempfile.mkdtemp(prefix='bench_trace_')
  with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
    t = time.perf_counter()
    state = jax.block_until_ready(chunk(state, *args))[0]
    wall = time.perf_counter() - t
  path = glob.glob(os.path.join(trace_dir, '**', '*.trace.json.gz'), recursive=True)[0]
  with gzip.open(path) as f:
    events = json.load(f)
  events = events['traceEvents'] if isinstance(events, dict) else events
  by_op, by_cat = collections.Counter(), collections.Counter()
  for e in events:
    if e.get('ph') == 'X' and e['name'] in names:
      by_op[e['name']] += e['dur'] / 1e3 / steps
      by_cat[_category(names[e['name']])] += e['dur'] / 1e3 / steps
  total = sum(by_cat.values())
  lines = [f'{steps} steps of batch {b}: {1e3 * wall / steps:.1f} ms/step wall, '
           f'{total:.1f} ms/step in HLO ops (both cores\' op time summed)', '',
           '| layer, pass | ms/step | share |', '|---|---:|---:|']
  lines += [f'| {k} | {v:.2f} | {100 * v / total:.0f} % |' for k, v in by_cat.most_common()]
  lines += ['', '| top HLO ops | ms/step | op (jax name stack) |', '|---|---:|---|']
  lines += [f"| {k} | {v:.2f} | {names[k].split('closed_call/')[-1][:70]} |"
            for k, v in by_op.most_common(12)]
  return '\n'.join(lines)


def _section_key(section: str) -> tuple:
  """What a section measures: its heading without the date, and the machine."""
  lines = section.splitlines()
  machine = next((l.split('peak:', 1)[1].split(':')[0].strip() for l in lines if 'peak:' in l), '')
  return lines[0].split(' — ')[0].strip(), machine


def write_section(path: str, section: str) -> None:
  """Puts ``section`` (a '### ' section) into the markdown file at ``path``: it
  replaces the section that measured the same thing on the same machine, so the
  file holds each measurement's current figure, not a trail; others are kept."""
  text = open(path).read() if os.path.exists(path) else ''
  head, *sections = text.split('\n### ')
  sections = ['### ' + s.strip() for s in sections]
  if head.startswith('### '):
    head, sections = '', [head.strip()] + sections
  key = _section_key(section.strip())
  kept = [s for s in sections if _section_key(s) != key] + [section.strip()]
  with open(path + '.tmp', 'w') as f:
    f.write((head.rstrip() + '\n\n' if head.strip() else '') + '\n\n'.join(kept) + '\n')
  os.replace(path + '.tmp', path)


def main(argv):
  del argv
  overrides = list(FLAGS.set)
  if FLAGS.data_dir:
    overrides += ['data.source=idx', f'data.data_dir={os.path.abspath(FLAGS.data_dir)}',
                  'data.download=False']
  config = load_config(FLAGS.config, overrides)
  if FLAGS.profile:
    section = f'### profile of {FLAGS.config} {" ".join(FLAGS.set)}\n\n{profile(config)}\n'
    print(section)
    if FLAGS.out:
      write_section(FLAGS.out, section)
    return
  peak = cpu_peak(FLAGS.fma_per_cycle)
  cost = model_cost(config)
  results = {loop: [] for loop in FLAGS.loops}
  if any(loop in TORCH_LOOPS for loop in FLAGS.loops) and not (
      FLAGS.pytorch_python and FLAGS.data_dir):
    raise app.UsageError('the torch_* loops need --pytorch_python and --data_dir')
  if 'warm' in FLAGS.loops:  # fill the cache: the run before, on this machine
    shutil.rmtree(WARM_CACHE, ignore_errors=True)
    run_once('warm', FLAGS.config, overrides, config.batch_size, FLAGS.target,
             FLAGS.timeout, FLAGS.stop_at_target)
  for i in range(FLAGS.runs):  # interleaved, so a change in the machine's load hits all
    for loop in FLAGS.loops:
      if loop in TORCH_LOOPS:
        r = run_reference(FLAGS.pytorch_python, TORCH_LOOPS[loop], FLAGS.data_dir,
                          FLAGS.target, seed=i)
      else:
        r = run_once(loop, FLAGS.config, overrides, config.batch_size, FLAGS.target,
                     FLAGS.timeout, FLAGS.stop_at_target)
      print(f"{loop} run {i + 1}: to target {_fmt(r['time_to_target'])} s (epoch "
            f"{r['epoch']}, test {_fmt(r['test_accuracy'], '.4f')}), compile "
            f"{_fmt(r['compile_s'])} s, {_fmt(r['images_per_s'], ',.0f')} img/s, wall "
            f"{r['wall_s']:.1f} s, load {r['load']:.1f}; phases "
            + ', '.join(f'{p} {v:.2f} s' for p, v in r['phases'].items()), flush=True)
      results[loop].append(r)
  command = report.command()
  section = '\n'.join([
      f"### {FLAGS.config} {' '.join(FLAGS.set)} — {time.strftime('%Y-%m-%d %H:%M')}",
      '', f'`{command}`', '',
      f"- backend: {cost['backend']}; peak: {peak['how']}",
      f"- model: {cost['macs']:,} forward MACs/image; XLA cost analysis of one train "
      f"step: {cost['train_flops'] / 1e6:.2f} MFLOP/image (used for GFLOP/s)",
      f"- a 2048x2048 fp32 matmul ran at {cost['matmul_gflops']:.0f} GFLOP/s just before "
      '(what XLA:CPU reaches on this machine now; low = the CPU is shared)',
      f'- medians of {FLAGS.runs} fresh processes per loop, run interleaved; load = the '
      f'1-minute load average when a run started ({os.cpu_count()} cores: above '
      f'{os.cpu_count()} the CPU was shared)', '',
      table(results, cost, peak, FLAGS.target), ''])
  for loop in TORCH_LOOPS:
    for i, r in enumerate(results.get(loop, [])):
      section += f'\n{loop} run {i + 1} (torch seed {i}): {r["summary"]}'
  print('\n' + section)
  if FLAGS.out:
    write_section(FLAGS.out, section)


def define_flags():
  flags.DEFINE_string('config', 'configs/speedrun.py', 'Config file to time.')
  flags.DEFINE_multi_string('set', [], "Config overrides 'key=value' (e.g. "
                            '--set=batch_size=256), for every run.')
  flags.DEFINE_string('data_dir', None, 'IDX folder: use data.source=idx (no '
                      'TensorFlow import); else the config decides.')
  flags.DEFINE_integer('runs', 3, 'Runs per loop (medians are reported).')
  flags.DEFINE_list('loops', ['scan', 'naive'], "Any of 'scan' (cold), 'warm', 'naive', "
                    "'torch_record', 'torch_examples'.")
  flags.DEFINE_float('target', 0.99, 'Test accuracy to reach.')
  flags.DEFINE_string('out', None, 'Markdown file for the results: a section per config, '
                      'overrides and machine, replaced when measured again.')
  flags.DEFINE_integer('timeout', 900, 'Seconds before a run is killed.')
  flags.DEFINE_bool('stop_at_target', False, 'End each run at its first evaluation at '
                    '>= --target (saves time on long configs; the rest is not timed).')
  flags.DEFINE_bool('profile', False, 'Instead of timing runs, trace 20 train steps '
                    'and print where the time goes (per layer and pass, top HLO ops).')
  flags.DEFINE_string('pytorch_python', None, 'A Python interpreter with torch, for the '
                      'torch_* loops (experiments.speed.pytorch_reference; needs --data_dir).')
  flags.DEFINE_integer('fma_per_cycle', 0, 'fp32 FMAs per core per cycle (0 = guess '
                       'from /proc/cpuinfo).')


if __name__ == '__main__':
  define_flags()
  app.run(main)
