"""The docs site's sources: every page exists and is reachable, the tutorials are
executable notebooks that need nothing beyond the clone.

The build itself (``python -m sphinx -W --keep-going -b html docs ...``, run by
.ci/run) executes the notebooks and fails on any warning; these checks are the
cheap part of it that pytest can run in a second.
"""
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(ROOT, 'docs')

PAGES = ['index', 'getting_started', 'concepts', 'zoo', 'data', 'inspect', 'search_and_scale',
         'ensembles', 'speed', 'design', 'errors', 'experiments', 'api']
TUTORIALS = ['tutorials/quickstart', 'tutorials/research_code', 'tutorials/primer']


def read(name: str) -> str:
  with open(os.path.join(DOCS, name + '.md'), encoding='utf-8') as f:
    return f.read()


def toctree_entries(text: str) -> list:
  """The entries of every ```{toctree} block of a MyST page (options skipped)."""
  entries = []
  for block in re.findall(r'```\{toctree\}\n(.*?)```', text, re.S):
    entries += [line.strip() for line in block.splitlines()
                if line.strip() and not line.strip().startswith(':')]
  return entries


def test_toctree_entries_are_read_from_blocks():
  text = '```{toctree}\n:maxdepth: 1\n\nzoo\ntutorials/primer\n```\n'
  assert toctree_entries(text) == ['zoo', 'tutorials/primer']


@pytest.mark.parametrize('page', PAGES + TUTORIALS)
def test_page_exists(page):
  assert os.path.isfile(os.path.join(DOCS, page + '.md')), f'docs/{page}.md is missing'


def test_every_page_is_in_the_index_toctree():
  listed = toctree_entries(read('index'))
  missing = [p for p in PAGES + TUTORIALS if p != 'index' and p not in listed]
  assert not missing, f'docs/index.md does not list {missing} in a toctree'
  unknown = [p for p in listed if p not in PAGES + TUTORIALS]
  assert not unknown, f'docs/index.md lists pages this test does not know: {unknown}'


@pytest.mark.parametrize('tutorial', TUTORIALS)
def test_tutorial_is_an_executable_myst_notebook_on_the_fixture(tutorial):
  text = read(tutorial)
  header = re.match(r'---\n(.*?)\n---\n', text, re.S)
  assert header, f'{tutorial}: no jupytext front matter'
  assert 'format_name: myst' in header.group(1) and 'name: python3' in header.group(1)
  cells = re.findall(r'```\{code-cell\} ipython3\n(.*?)```', text, re.S)
  assert len(cells) >= 5, f'{tutorial}: only {len(cells)} code cells'
  code = '\n'.join(cells)
  assert "'mnist_small'" in code, f'{tutorial} does not read the committed fixture'
  assert 'MNIST_JAX_FULL_DATA' not in code and 'download=True' not in code


def test_the_build_executes_the_notebooks_and_fails_on_errors():
  with open(os.path.join(DOCS, 'conf.py'), encoding='utf-8') as f:
    conf = f.read()
  assert re.search(r"^nb_execution_mode = '(force|cache)'", conf, re.M)
  assert re.search(r'^nb_execution_raise_on_error = True', conf, re.M)
  assert re.search(r'^nb_execution_timeout = \d+', conf, re.M)


def test_no_page_takes_the_name_of_a_page_sphinx_writes():
  """Sphinx's HTML builder writes search.html, genindex.html and py-modindex.html
  itself: a page of ours named so would be overwritten (its content lost)."""
  mine = {os.path.splitext(os.path.relpath(os.path.join(d, f), DOCS))[0]
          for d, _, files in os.walk(DOCS) if '_build' not in d
          for f in files if f.endswith('.md')}
  assert not mine & {'search', 'genindex', 'py-modindex'}
