"""Sphinx configuration of the mnist_jax docs (MyST Markdown + myst-nb, as Flax and Optax).

Build from the repository root with ``pip install -e '.[docs]'`` and the one command
of docs/getting_started.md (warnings are errors).
The tutorials are executed at every build on the committed fixture
tests/fixtures/mnist_small (no network); a failing cell fails the build.
"""
import os
import sys

sys.path.insert(0, os.path.abspath('..'))

project = 'mnist_jax'
author = 'The mnist_jax authors'
copyright = '2026, The mnist_jax authors'  # pylint: disable=redefined-builtin

extensions = [
    'myst_nb',               # MyST Markdown pages and MyST-Markdown notebooks
    'sphinx.ext.autodoc',
    'sphinx.ext.napoleon',
    'sphinx.ext.mathjax',
]

source_suffix = {'.rst': 'restructuredtext', '.md': 'myst-nb'}
exclude_patterns = ['_build', 'jupyter_execute', '.jupyter_cache', '**.ipynb_checkpoints']
nitpicky = False

# -- MyST ------------------------------------------------------------------------------
myst_enable_extensions = ['dollarmath', 'colon_fence']
myst_heading_anchors = 3

# -- myst-nb: execute every notebook at every build; an error in a cell fails it ------
nb_execution_mode = 'force'
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_execution_timeout = 300          # seconds per cell
nb_merge_streams = True
nb_render_markdown_format = 'myst'   # Markdown outputs (the explainer's tables) as MyST, with tables

# -- autodoc ------------------------------------------------------------------------------
autodoc_member_order = 'bysource'
autodoc_default_options = {'members': True, 'undoc-members': False}
autodoc_typehints = 'signature'
napoleon_google_docstring = True
napoleon_numpy_docstring = False

# -- HTML --------------------------------------------------------------------------------
html_theme = 'sphinx_book_theme'
html_title = 'mnist_jax'
html_theme_options = {
    'show_toc_level': 2,
    'navigation_with_keys': False,
}



def _rst_problems(lines, env) -> bool:
  """Whether docutils reports anything (a warning or worse) for these lines as reST."""
  import docutils.core  # pylint: disable=g-import-not-at-top
  import docutils.nodes  # pylint: disable=g-import-not-at-top
  tree = docutils.core.publish_doctree(
      '\n'.join(lines), settings_overrides={'report_level': 2, 'halt_level': 5,
                                            'warning_stream': False, 'env': env})
  messages = list(tree.findall(docutils.nodes.system_message)) + tree.transform_messages
  return (any(m['level'] >= 2 for m in messages)
          or any(True for _ in tree.findall(docutils.nodes.problematic)))


def _verbatim(lines, keep: int):
  """``lines`` with all but the first ``keep`` lines as one literal block."""
  rest = lines[keep:]
  while rest and not rest[0].strip():
    rest.pop(0)
  while rest and not rest[-1].strip():
    rest.pop()
  if not rest:
    return list(lines)
  head = list(lines[:keep])
  if head and head[-1].strip():
    head.append('')
  return head + ['::', ''] + [('    ' + line) if line.strip() else '' for line in rest] + ['']


def _plain_docstrings(app, what, name, obj, options, lines):
  """The docstrings are plain text (formulas in the primer's notation, ASCII tables,
  aligned lists), not reStructuredText. A module's docstring shows its first paragraph
  as text and the rest as written; any other docstring that is not valid reST shows the
  same way (all of it as written when even its first paragraph is not), so a formula
  such as |y − ŷ| never becomes a broken substitution."""
  del name, obj, options
  if not lines:
    return
  end = lines.index('') if '' in lines else len(lines)
  if what == 'module':
    lines[:] = _verbatim(lines, end)
  elif _rst_problems(lines, app.env):
    lines[:] = _verbatim(lines, 0 if _rst_problems(lines[:end], app.env) else end)


def _package_modules(app, docname, source):
  """Expands ``<!-- api-modules: PACKAGE first second ... -->`` in a page into one
  section with an ``automodule`` per public module of PACKAGE: the named ones first, in
  that order, then the others alphabetically, so a new module is listed without an edit
  and a removed one is not asked for."""
  del app, docname
  import importlib  # pylint: disable=g-import-not-at-top
  import pkgutil  # pylint: disable=g-import-not-at-top
  import re  # pylint: disable=g-import-not-at-top

  def expand(match):
    package, *first = match.group(1).split()
    found = sorted(m.name for m in pkgutil.iter_modules(importlib.import_module(package).__path__)
                   if not m.name.startswith('_'))
    order = [m for m in first if m in found] + [m for m in found if m not in first]
    return '\n'.join(f'### `{package}.{m}`\n\n```{{eval-rst}}\n.. automodule:: {package}.{m}\n'
                     f'   :members:\n```\n' for m in order)

  source[0] = re.sub(r'<!-- api-modules: ([\w. ]+?) -->', expand, source[0])


def setup(app):
  app.connect('autodoc-process-docstring', _plain_docstrings)
  app.connect('source-read', _package_modules)
