"""Writes an experiment's markdown result (creating its folder) and echoes it."""
import os


def write_markdown(path: str, lines: list) -> None:
  """``lines`` joined by newlines into ``path``, then printed."""
  os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
  with open(path, 'w') as f:
    f.write('\n'.join(lines) + '\n')
  print('\n'.join(lines))
