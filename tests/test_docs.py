"""What the project says about itself is true of a plain clone.

  (a) no command a user reads (README.md, docs/, configs/, experiments/, the
      package's messages and docstrings) names a sibling folder outside the clone;
  (b) tracked files speak only of the project, not of how it was made;
  (c) every ``python -m mnist_jax.<command>`` and ``python -m experiments.<group>.<script>``
      in README.md and docs/ passes only flags that command defines, and every
      ``--config.<key>`` names a key of the config it loads; no page, config or script
      runs an experiment by its file path;
  (d) every repository path named in a tracked file exists;
  (e) README.md is at most 200 lines.

docs/ may be absent (then (c) and (d) read README.md alone and paths under docs/
are not checked); once it exists every page is read.
"""
import ast
import glob
import os
import re
import shlex
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
THIS = 'tests/test_docs.py'
TOP = ('mnist_jax', 'configs', 'experiments', 'tests', 'docs')
TEXT = ('.py', '.md', '.cfg', '.toml', '.json', '.txt', '.js', '.html', '.css', '.yml',
        '.yaml', '.ini', '.sh', '')
OUTSIDE = ('../shared', '/work/')

# The words of how the project was built, not of what it is. 'round(' (the
# function), "'round'" (a line cap) and pytest's scope='session' are code.
PROCESS_WORDS = [
    (r'\bsessions?\b', 'session'),
    (r'\brounds?\b(?!\()', 'round'),
    (r'\bthe lead\b', 'the lead'),
    (r'\bhelpers?\b', 'helper'),
    (r'\bcpu lock\b', 'CPU lock'),
    (r'\bissues? ?#?\d+', 'issue N'),
    (r"\bthe issue's\b", "the issue's"),
]
ISSUE_REF = re.compile(r'(?<![\w/.#&-])#\d+\b')   # '#12'; 'jax#12868' names another project
CODE_WORDS = re.compile(r"scope=['\"]session['\"]|['\"]round['\"]")


def tracked() -> list:
  """Tracked text files, relative to the root (git ls-files; a copy without .git: the tree)."""
  try:
    out = subprocess.run(['git', 'ls-files'], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout.split('\n')
  except (OSError, subprocess.CalledProcessError):
    out = [os.path.relpath(os.path.join(d, f), ROOT) for d, _, files in os.walk(ROOT)
           if '.git' not in d and '_build' not in d for f in files]
  return sorted(p for p in out if p and os.path.splitext(p)[1] in TEXT
                and not p.startswith('tests/fixtures/mnist_small')
                and os.path.isfile(os.path.join(ROOT, p)))


def read(path: str) -> str:
  with open(os.path.join(ROOT, path), encoding='utf-8', errors='replace') as f:
    return f.read()


def has_docs() -> bool:
  return os.path.isdir(os.path.join(ROOT, 'docs'))


def pages() -> list:
  """README.md and every docs page (Markdown, MyST notebooks)."""
  found = glob.glob(os.path.join(ROOT, 'docs', '**', '*.md'), recursive=True)
  return ['README.md'] + sorted(os.path.relpath(p, ROOT) for p in found
                                if '_build' not in p.split(os.sep))


def retired(path: str) -> bool:
  """experiments/PERFORMANCE.md is the docs' speed page to be; until docs/speed.md
  exists it is the old text, checked once it is gone or rewritten."""
  return path == 'experiments/PERFORMANCE.md' and not os.path.exists(
      os.path.join(ROOT, 'docs', 'speed.md'))


def docstrings_and_strings(path: str) -> str:
  """A Python file's string constants (docstrings, messages) and comments."""
  text = read(path)
  parts = [node.value for node in ast.walk(ast.parse(text))
           if isinstance(node, ast.Constant) and isinstance(node.value, str)]
  parts += re.findall(r'#[^\n]*', text)
  return '\n'.join(parts)


# (a) ----------------------------------------------------------------------------------------

def test_no_command_names_a_folder_outside_the_clone():
  read_by_users = pages() + [p for p in tracked() if p.endswith('.py') and p.startswith(
      ('mnist_jax/', 'configs/', 'experiments/', 'docs/'))]
  bad = []
  for path in read_by_users:
    if retired(path):
      continue
    text = read(path) if path.endswith('.md') else docstrings_and_strings(path)
    bad += [f'{path}: {line.strip()[:100]}' for line in text.splitlines()
            if any(o in line for o in OUTSIDE)]
  assert not bad, ('use the TFDS default, $MNIST_DIR or tests/fixtures/mnist_small '
                   'instead of a folder beside the clone:\n' + '\n'.join(bad))


# (b) ----------------------------------------------------------------------------------------

def process_words(text: str) -> list:
  text = CODE_WORDS.sub('', text)
  found = [name for pattern, name in PROCESS_WORDS if re.search(pattern, text, re.I)]
  return found + (['#N'] if ISSUE_REF.search(text) else [])


def test_process_words_are_caught():
  assert process_words('As this session showed') == ['session']
  assert process_words('Round four of the speed work') == ['round']
  assert process_words('fixed for issue 12; see #7') == ['issue N', '#N']
  assert process_words("x = round(y); pen.lineCap = 'round'; scope='session'") == []
  assert process_words('slow in a scan (jax#12868), optuna#4002') == []


def test_tracked_files_speak_only_of_the_project():
  bad = []
  for path in tracked():
    if path == THIS or retired(path):
      continue
    styled = path.endswith(('.css', '.js', '.html'))   # '#222' is a colour there
    for n, line in enumerate(read(path).splitlines(), 1):
      words = [w for w in process_words(line) if not (styled and w == '#N')]
      if words:
        bad.append(f'{path}:{n}: {", ".join(words)}: {line.strip()[:90]}')
  assert not bad, 'say what the code does, not how it was made:\n' + '\n'.join(bad)


# (c) ----------------------------------------------------------------------------------------

COMMAND = re.compile(r'python3? -m ((?:mnist_jax|experiments)(?:\.\w+)+)([^\n`|]*)')
BY_PATH = re.compile(r'python3? experiments/[\w/]+\.py')


def commands_in(text: str) -> list:
  """(program, arguments) of each command in a page, continuation lines joined."""
  text = re.sub(r'\\\n\s*', ' ', text)
  found = []
  for m in COMMAND.finditer(text):
    if re.match(r'[^\n]*\n\s*error:', text[m.end():]):
      continue    # a bad-input example: the line below is the error it prints
    program = m.group(1)
    rest = re.split(r'\s#|\s&&|\s;|\)\s|\s\|', m.group(2))[0]
    try:
      words = shlex.split(rest.replace('$', ''), posix=True)
    except ValueError:
      words = rest.split()
    found.append((program, [w.strip('[]') for w in words]))
  return found


def test_commands_are_read_with_their_continuation_lines():
  text = ('```\npython -m mnist_jax.main --config=configs/lenet.py \\\n'
          '    --config.num_epochs=5 [--workdir=DIR]  # a comment\n```\n'
          'and `python -m experiments.speed.benchmark --runs=3` inline, not '
          '`python -m experiments.<group>.<script>`')
  assert commands_in(text) == [
      ('mnist_jax.main', ['--config=configs/lenet.py', '--config.num_epochs=5', '--workdir=DIR']),
      ('experiments.speed.benchmark', ['--runs=3'])]
  shown_failing = ('$ python -m mnist_jax.main --config.lerning_rate=0.1\n'
                   'error: unknown config key ...\n')
  assert commands_in(shown_failing) == []


def page_commands() -> list:
  return [(page, program, args) for page in pages() for program, args in commands_in(read(page))]


def module_file(program: str) -> str:
  """'experiments.speed.benchmark' -> 'experiments/speed/benchmark.py'."""
  return '/'.join(program.split('.')) + '.py'


# Prints each command's --helpfull into <folder>/<command>: one process imports what
# the commands share once, then runs each command as ``python -m <command> --helpfull``
# would (runpy, as __main__) in a child forked from it.
HELP_TEXTS = r'''
import os, runpy, sys, traceback
import absl.app, flax.linen, jax, ml_collections, optax
import mnist_jax.cli, mnist_jax.config.defaults
folder = sys.argv[1]
for program in sys.argv[2:]:
  pid = os.fork()
  if pid == 0:
    out = os.open(os.path.join(folder, program), os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(out, 1)
    os.dup2(out, 2)
    sys.argv = [program, '--helpfull']
    try:
      runpy.run_module(program, run_name='__main__', alter_sys=True)
    except SystemExit:
      pass
    except BaseException:
      traceback.print_exc()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
  os.waitpid(pid, 0)
'''


def help_texts(programs, folder) -> dict:
  """{command: its --helpfull output}."""
  subprocess.run([sys.executable, '-c', HELP_TEXTS, str(folder), *programs], cwd=ROOT,
                 check=True, timeout=300)
  return {p: (folder / p).read_text() for p in programs}


def _source_flags(program: str) -> set:
  """Flags a module defines, read from its source (for a script whose imports are
  not installed here, e.g. the PyTorch reference)."""
  return set(re.findall(r"DEFINE_\w+\(\s*'(\w+)'", read(module_file(program))))


def defined_flags(program: str, text: str) -> frozenset:
  """The flags of a command, read from its --helpfull output ``text`` (absl)."""
  names = set(re.findall(r'^\s+--(?:\[no\])?([\w.-]+)', text, re.M))
  names |= set(re.findall(r'^\s+-\w,\s?--([\w-]+)', text, re.M))   # -v,--verbosity; -h, --help
  if len(names) < 2:
    names |= _source_flags(program)
  assert names, f'{program} defines no flags we could read:\n{text[-2000:]}'
  return frozenset(names)


def _config_of(program: str, args: list):
  from mnist_jax.config import files as config_files  # pylint: disable=g-import-not-at-top
  path = next((a.split('=', 1)[1] for a in args if a.startswith('--config=')), None)
  if path is None and program.startswith('experiments.'):
    m = re.search(r"DEFINE_config_file\(\s*'config',\s*'([^']+)'", read(module_file(program)))
    path = m and m.group(1)
  if path is None or not os.path.isfile(os.path.join(ROOT, path.split(':')[0])):
    return None
  return config_files.load(os.path.join(ROOT, path))


def _has_key(config, dotted: str) -> bool:
  node = config
  for part in dotted.split('.'):
    if not hasattr(node, 'keys') or part not in node:
      return False
    node = node[part]
  return True


def test_commands_in_the_docs_use_only_defined_flags(tmp_path):
  found = page_commands()
  assert any(p == 'mnist_jax.main' for _, p, _ in found), 'README.md lost its train command'
  programs = sorted({p for _, p, _ in found})
  missing = [p for p in programs if not os.path.isfile(os.path.join(ROOT, module_file(p)))]
  assert not missing, f'commands run scripts that do not exist: {missing}'
  texts = help_texts(programs, tmp_path)
  flags_of = {p: defined_flags(p, texts[p]) for p in programs}
  bad = []
  for page, program, args in found:
    names = flags_of[program]
    config = None
    for arg in args:
      if not arg.startswith('--') or arg == '--':
        continue
      name = re.match(r'[\w.-]*', arg[2:]).group()
      if name.startswith('config.'):
        config = config or _config_of(program, args)
        if config is not None and not _has_key(config, name[len('config.'):]):
          bad.append(f'{page}: {program} {arg}: no config key {name[7:]!r}')
        continue
      if name not in names and not (name.startswith('no') and name[2:] in names):
        bad.append(f'{page}: {program} has no flag --{name}')
  assert not bad, '\n'.join(bad)


def test_experiments_run_as_modules():
  """``python experiments/x/y.py`` puts experiments/x/ first on sys.path, where
  ``from experiments import report`` fails: every experiment runs with -m."""
  texts = pages() + [p for p in tracked() if p.endswith('.py') and p.startswith(
      ('configs/', 'experiments/'))]
  bad = [f'{path}: {m.group()}' for path in texts if path != THIS
         for m in BY_PATH.finditer(read(path))]
  assert not bad, 'run it as python -m experiments.<group>.<script>:\n' + '\n'.join(bad)


# (d) ----------------------------------------------------------------------------------------

REPO_PATH = re.compile(r'(?<![\w/.$~-])((?:' + '|'.join(TOP) + r')/[\w./-]*\w/?)')
PACKAGE_PATH = re.compile(
    r'(?<![\w/.$~-])((?:engine|search|inspection|data|nn|models|config|parallel)/\w+\.py)\b')
PLACEHOLDER = re.compile(r'[<>*{}$]|\.\.\.|…')


def _build_outputs() -> list:
  """The folders .gitignore names under the clone (docs/_build/, ...): made by a
  build, so a plain clone has none of them."""
  with open(os.path.join(ROOT, '.gitignore')) as f:
    lines = [l.strip() for l in f if l.strip() and not l.startswith('#')]
  return [l.strip('/') + '/' for l in lines if '/' in l.strip('/') and '*' not in l]


def _exists(path: str) -> bool:
  if path.startswith('docs/') and not has_docs():
    return True    # the docs pages arrive with docs/
  if any((path.rstrip('/') + '/').startswith(out) for out in _build_outputs()):
    return True    # a build output: named by the build command, absent from a plain clone
  return os.path.exists(os.path.join(ROOT, path.rstrip('/')))


def _is_output_stem(path: str) -> bool:
  """experiments/results/x: a script's --out prefix, made into x.md, x_small.png, ..."""
  return path.startswith('experiments/results/') and bool(
      glob.glob(os.path.join(ROOT, glob.escape(path) + '*')))


def test_every_named_path_exists():
  bad = []
  for path in tracked():
    if retired(path) or path in (THIS, '.gitignore'):   # .gitignore names build outputs
      continue
    text = read(path)
    for n, line in enumerate(text.splitlines(), 1):
      for m in REPO_PATH.finditer(line):
        name = m.group(1).rstrip('.')
        tail = line[m.end():m.end() + 2]
        if PLACEHOLDER.search(name) or PLACEHOLDER.search(tail):
          continue    # a pattern such as experiments/results/ensemble_<name>.md
        if not _exists(name) and not _is_output_stem(name):
          bad.append(f'{path}:{n}: {name}')
      for m in PACKAGE_PATH.finditer(line):
        name = m.group(1)
        if not (os.path.exists(os.path.join(ROOT, 'mnist_jax', name))
                or os.path.exists(os.path.join(ROOT, name))
                or os.path.exists(os.path.join(ROOT, 'experiments', name))):
          bad.append(f'{path}:{n}: {name} (in mnist_jax/)')
  assert not bad, 'paths named that do not exist:\n' + '\n'.join(bad)


# (e) ----------------------------------------------------------------------------------------

def test_readme_is_short():
  lines = read('README.md').count('\n')
  assert lines <= 200, f'README.md has {lines} lines; move detail to docs/'


@pytest.mark.parametrize('page', ['README.md'])
def test_the_page_links_resolve(page):
  """Relative Markdown links and images of the page point at files that exist."""
  text = read(page)
  targets = re.findall(r'\]\(([^)#\s]+)(?:#[^)]*)?\)', text)
  local = [t for t in targets if not re.match(r'\w+:', t)]
  assert local, f'{page} links nothing in the repository'
  missing = [t for t in local if not _exists(os.path.normpath(t))]
  assert not missing, f'{page} links files that do not exist: {missing}'
