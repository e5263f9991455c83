"""The package's layers: every import (lazy ones inside functions too) points down.

  8 commands     main sweep evaluate predict plots explain serve
  7 cli          flag parsing, the one error printer, quiet logs
  6 api          the notebook functions
  5 search/ inspection/   the sweep runner; explainer, figures, image preparation
  4 engine/      the trainer for one model and its pieces; K models on top; runs read back
    nnx_bridge   a flax.nnx module as a train state of the pure step, and back
  3 train  parallel/  store/   the pure step; meshes, shards, multi-host start-up; run files
  2 models/ config/       the architectures; defaults and checks
  1 nn/ data/             the primer's math, optimizers; data files and preprocessing
  ½ extras       which extra brings an optional package (imports errors only)
  0 errors       UserError
A module imports only lower layers or its own package; data/ and models/ never
import each other; no module but a command defines a flag or exits. Inside engine/
the trainer's pieces sit below the trainer, K models (stacked) above it, and the
readers of a finished run on top (ENGINE).
"""
import ast
import os

import pytest

PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'mnist_jax')
COMMANDS = {'main', 'sweep', 'evaluate', 'predict', 'plots', 'explain', 'serve'}
LAYERS = {'errors': 0, 'extras': 0.5, 'nn': 1, 'data': 1, 'models': 2, 'config': 2, 'train': 3,
          'parallel': 3, 'store': 3, 'engine': 4, 'nnx_bridge': 4, 'search': 5, 'inspection': 5,
          'api': 6, 'cli': 7, **{c: 8 for c in COMMANDS}}


ENGINE = {'calibration': 0, 'ensemble': 1, 'epoch': 1, 'summary': 1,
          'memory': 2, 'evaluation': 2, 'trainer': 3, 'stacked': 4, 'rundir': 5}


def _modules():
  for root, _, files in os.walk(PACKAGE):
    for name in files:
      if name.endswith('.py'):
        path = os.path.join(root, name)
        rel = os.path.relpath(path, PACKAGE)[:-3].split(os.sep)
        yield [p for p in rel if p != '__init__'] or ['__init__'], path


def _imports(path):
  """(top-level part of mnist_jax it imports, line) for every import in the file."""
  tree = ast.parse(open(path).read())
  for node in ast.walk(tree):
    if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith('mnist_jax'):
      parts = node.module.split('.')[1:]
      targets = [parts] if parts else [[a.name] for a in node.names]
      for t in targets:
        yield t[0], node.lineno
    elif isinstance(node, ast.Import):
      for a in node.names:
        if a.name.startswith('mnist_jax.'):
          yield a.name.split('.')[1], node.lineno


def test_every_module_has_a_layer():
  tops = {parts[0] for parts, _ in _modules()} - {'__init__'}
  assert tops <= set(LAYERS), tops - set(LAYERS)


@pytest.mark.parametrize('parts,path', list(_modules()), ids=lambda v: '.'.join(v)
                         if isinstance(v, list) else '')
def test_imports_point_down(parts, path):
  own = parts[0]
  layer = LAYERS.get(own, 0)
  for target, line in _imports(path):
    if target == own:
      continue
    assert LAYERS[target] < layer, f'{path}:{line} imports {target} (layer {LAYERS[target]}) ' \
                                   f'from layer {layer}'
    assert {own, target} != {'data', 'models'}, f'{path}:{line}: data and models are apart'


def test_engine_builds_k_models_on_the_trainer_and_never_the_reverse():
  engine = os.path.join(PACKAGE, 'engine')
  names = {n[:-3] for n in os.listdir(engine) if n.endswith('.py')} - {'__init__'}
  assert names == set(ENGINE), names ^ set(ENGINE)
  for name in names:
    path = os.path.join(engine, name + '.py')
    for node in ast.walk(ast.parse(open(path).read())):
      if isinstance(node, ast.ImportFrom) and node.module == 'mnist_jax.engine':
        for alias in node.names:
          assert ENGINE[alias.name] < ENGINE[name], \
              f'{path}:{node.lineno} imports engine.{alias.name} from below it'


@pytest.mark.parametrize('parts,path', list(_modules()), ids=lambda v: '.'.join(v)
                         if isinstance(v, list) else '')
def test_only_commands_define_flags_or_exit(parts, path):
  if parts[0] in COMMANDS or parts[0] == 'cli':
    return
  text = open(path).read()
  for forbidden in ('flags.DEFINE', 'sys.exit(', 'config_flags.'):
    assert forbidden not in text, f'{path} uses {forbidden}'
