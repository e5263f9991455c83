"""What a results file records and where it goes: the command as it was run, the
machine and the date, written as markdown under experiments/results/."""
import os
import shlex
import sys
import time

from experiments import hardware

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, 'experiments', 'results')


def _shown(word: str, mnist_dir: str) -> str:
  """One argument, shell-quoted; a value naming the folder of $MNIST_DIR is written
  $MNIST_DIR, so the recorded line runs on another machine."""
  name, eq, value = word.rpartition('=') if '=' in word else ('', '', word)
  if mnist_dir and value and os.path.abspath(value) == os.path.abspath(mnist_dir):
    return f'{shlex.quote(name + eq)}$MNIST_DIR' if eq else '$MNIST_DIR'
  return shlex.quote(word)


def command() -> str:
  """The running command as typed at the repository root:
  'python -m experiments.speed.conv_grad --steps=200'."""
  module = sys.modules['__main__'].__spec__.name
  mnist_dir = os.environ.get('MNIST_DIR', '')
  return ' '.join(['python', '-m', module] + [_shown(w, mnist_dir) for w in sys.argv[1:]])


def machine() -> str:
  """'Machine: <CPU, cores; JAX on devices>; <date>.' (experiments/hardware.py)."""
  return f"Machine: {hardware.describe()}; {time.strftime('%Y-%m-%d')}."


def write_markdown(path, lines: list) -> None:
  """``lines`` joined by newlines into ``path`` (its folder made; the file replaced
  whole, never left half written), then printed; only printed when ``path`` is None."""
  if path is None:
    print('\n'.join(lines))
    return
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path + '.tmp', 'w', encoding='utf-8') as f:
    f.write('\n'.join(lines) + '\n')
  os.replace(path + '.tmp', path)
  print('\n'.join(lines))
