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


def _module_docstring_verbatim(app, what, name, obj, options, lines):
  """Module docstrings here are plain text (formulas in the primer's notation, ASCII
  tables, indented examples), not reStructuredText: show the first paragraph as text and
  the rest as written, in a literal block."""
  del app, name, obj, options
  if what != 'module' or not lines:
    return
  try:
    end = lines.index('')
  except ValueError:
    return
  rest = lines[end + 1:]
  while rest and not rest[-1].strip():
    rest.pop()
  if rest:
    lines[end + 1:] = ['::', ''] + [('    ' + line) if line.strip() else '' for line in rest] + ['']


def setup(app):
  app.connect('autodoc-process-docstring', _module_docstring_verbatim)
