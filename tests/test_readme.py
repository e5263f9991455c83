"""The README's code blocks marked 'test:' run exactly as written."""
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def marked_blocks():
  text = open(os.path.join(ROOT, 'README.md')).read()
  return re.findall(r'<!-- test: tests/test_readme.py[^>]*-->\s*```python\n(.*?)```',
                    text, re.S)


def test_readme_train_step_snippet_runs(capsys):
  blocks = marked_blocks()
  assert blocks, 'README.md lost its tested train-step snippet'
  for code in blocks:
    exec(compile(code, 'README.md', 'exec'), {'__name__': '__readme__'})  # pylint: disable=exec-used
  printed = capsys.readouterr().out.split()
  assert len(printed) >= 3 and all(float(x) >= 0 for x in printed)
