"""The serve page: a FastAPI app over the runs under one root folder.

  GET  /                          the page (static/index.html, app.js, style.css)
  GET  /api/runs                  the runs under the root: [{'id', 'model', 'epochs', ...}]
  GET  /api/run?run=ID            config, curves (metrics.jsonl), conv layers with RF/jump
  GET  /api/history?run=ID        just the curves (overlaying a second run loads no model)
  POST /api/predict?run=ID[&inside=1]   body: an image file (PNG/JPEG/...) ->
                                  preprocessing steps, probabilities [, maps, saliency]
  GET  /api/confusion?run=ID      test confusion matrix and most confident mistakes
  GET  /api/cell?run=ID&true=i&pred=j   the test digits of one confusion cell

Safety: a run is named by its id, the path relative to the root, and found only
in the set of run directories discovered under the root (a folder with a
config.json, at most ``MAX_DEPTH`` levels down, symlinks leading out refused),
so ``../`` or an absolute path never reaches the file system. Bad input (not an
image, a blank drawing, a run without checkpoints, an unknown run) answers
HTTP 4xx with {'error': one line}; the server keeps running. The Host header
must be the loopback address when serving on it (no DNS-rebinding access).
Each run is loaded and compiled once (inspection/live.py) and shared by all
requests; FastAPI runs the plain ``def`` routes on its thread pool, so several
tabs are answered in parallel.
"""
import json
import os
import socket
import threading

import numpy as np

from mnist_jax.errors import UserError
from mnist_jax.inspection import image as image_lib

MAX_DEPTH = 3
MAX_UPLOAD = 20 * 2**20   # bytes
SKIP = {'checkpoints', 'tensorboard', 'plots', 'static'}
STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'static')
LOOPBACK = ('127.0.0.1', 'localhost', '::1')


def _inside(path: str, root: str) -> bool:
  real, top = os.path.realpath(path), os.path.realpath(root)
  return real == top or real.startswith(top + os.sep)


def find_runs(root: str, single: bool = False) -> dict:
  """{id: path} of the run directories (with a config.json) under ``root``; the
  id is the path relative to ``root``. ``single``: ``root`` is itself the run."""
  if single:
    return {os.path.basename(os.path.normpath(root)): root}
  runs = {}
  for here, dirs, files in os.walk(root):
    depth = os.path.relpath(here, root).count(os.sep) + (here != root)
    dirs[:] = sorted(d for d in dirs if d not in SKIP and not d.startswith('.')
                     and _inside(os.path.join(here, d), root))
    if 'config.json' in files and here != root:
      runs[os.path.relpath(here, root).replace(os.sep, '/')] = here
    if depth >= MAX_DEPTH:
      dirs[:] = []
  if os.path.isfile(os.path.join(root, 'config.json')):
    runs[os.path.basename(os.path.normpath(root))] = root
  return runs


def check_root(workdir=None, runs=None) -> tuple:
  """(root, single) from --workdir / --runs; UserError when neither or no run."""
  if bool(workdir) == bool(runs):
    raise UserError('pass exactly one of --workdir=RUN (one training run) or --runs=DIR '
                    '(a folder of runs)')
  root = workdir or runs
  if not os.path.isdir(root):
    raise UserError(f'{root} is not a folder; pass a run directory written by '
                    'python -m mnist_jax.main (or a folder of them with --runs)')
  if workdir and not os.path.isfile(os.path.join(root, 'config.json')):
    raise UserError(f'{root} has no config.json, so it is not a training run; pass '
                    'the --workdir a run of python -m mnist_jax.main wrote, or --runs=DIR')
  if runs and not find_runs(root):
    raise UserError(f'no training runs (folders with a config.json) under {root}; '
                    'train one with python -m mnist_jax.main --workdir=' +
                    os.path.join(root, 'NAME'))
  return os.path.abspath(root), bool(workdir)


def describe_run(run_id: str, path: str) -> dict:
  """The runs list's entry: model, epochs done, final metrics, checkpoints."""
  from mnist_jax.engine import rundir  # pylint: disable=g-import-not-at-top
  from mnist_jax.store import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  entry = {'id': run_id, 'model': None, 'epochs': 0, 'checkpoints': False}
  try:
    entry['model'] = rundir.load_config(path).model.name
    history = workdir_lib.load_history(path)
  except (UserError, ValueError):
    return entry
  entry['epochs'] = len(history)
  summary = os.path.join(path, 'summary.json')   # test: read once, at the end of a run
  if os.path.isfile(summary):
    try:
      with open(summary) as f:
        entry['test_accuracy'] = json.load(f).get('test_accuracy')
    except (OSError, ValueError):
      pass
  entry['checkpoints'] = any(
      os.path.isdir(os.path.join(path, 'checkpoints', w)) and any(
          s.isdigit() for s in os.listdir(os.path.join(path, 'checkpoints', w)))
      for w in ('best', 'latest'))
  return entry


class UnknownRun(UserError):
  """A run id that is not one of the runs under the root (HTTP 404)."""


class Runs:
  """The runs under the root and the loaded ones (each loaded once, under a lock)."""

  def __init__(self, root: str, single: bool, which: str):
    self.root, self.single, self.which = root, single, which
    self._loaded, self._lock = {}, threading.Lock()

  def path(self, run_id: str) -> str:
    found = find_runs(self.root, self.single)
    if run_id not in found or not _inside(found[run_id], self.root):
      raise UnknownRun(f"no run '{run_id}' under {self.root}; pick one of "
                        f"{', '.join(sorted(found)) or '(none)'}")
    return found[run_id]

  def get(self, run_id: str):
    loaded = self._loaded.get(run_id)   # found and checked when it was loaded
    if loaded is not None:
      return loaded
    from mnist_jax.inspection import live  # pylint: disable=g-import-not-at-top
    path = self.path(run_id)
    with self._lock:
      if run_id not in self._loaded:
        self._loaded[run_id] = live.load(run_id, path, self.which)
      return self._loaded[run_id]


def decode_upload(data: bytes) -> np.ndarray:
  """The pixels of an uploaded image file; UserError for an empty or non-image body."""
  import io  # pylint: disable=g-import-not-at-top
  if not data:
    raise UserError('the request has no image; draw a digit or drop an image file')
  if len(data) > MAX_UPLOAD:
    raise UserError(f'the image is {len(data) / 2**20:.0f} MB, over the '
                    f'{MAX_UPLOAD // 2**20} MB limit; pass a smaller picture')
  return image_lib.load_image(io.BytesIO(data), name='upload')


def create_app(root: str, single: bool = False, which: str = 'best', host: str = '127.0.0.1'):
  """The FastAPI app serving the page and the API over the runs under ``root``."""
  from fastapi import FastAPI, Query, Request  # pylint: disable=g-import-not-at-top
  from fastapi.concurrency import run_in_threadpool  # pylint: disable=g-import-not-at-top
  from fastapi.exceptions import RequestValidationError  # pylint: disable=g-import-not-at-top
  from fastapi.responses import FileResponse, JSONResponse  # pylint: disable=g-import-not-at-top
  from fastapi.staticfiles import StaticFiles  # pylint: disable=g-import-not-at-top
  from starlette.middleware import trustedhost  # pylint: disable=g-import-not-at-top

  runs = Runs(root, single, which)
  app = FastAPI(title='mnist_jax serve', docs_url=None, redoc_url=None, openapi_url=None)
  app.state.runs = runs   # the loaded runs (scripts time them without HTTP)
  if host in LOOPBACK:
    app.add_middleware(trustedhost.TrustedHostMiddleware,
                       allowed_hosts=['127.0.0.1', 'localhost', '[::1]'])
  app.mount('/static', StaticFiles(directory=STATIC), name='static')

  @app.exception_handler(UserError)
  def user_error(request, e):
    del request
    return JSONResponse({'error': ' '.join(str(e).split())},
                        status_code=404 if isinstance(e, UnknownRun) else 400)

  @app.exception_handler(RequestValidationError)
  def bad_request(request, e):
    del request
    where = '; '.join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
    return JSONResponse({'error': f'bad request ({where})'}, status_code=400)

  @app.get('/', include_in_schema=False)
  def index():
    return FileResponse(os.path.join(STATIC, 'index.html'))

  @app.get('/api/runs')
  def list_runs():
    found = find_runs(root, single)
    return {'root': root, 'which': which,
            'runs': [describe_run(i, p) for i, p in sorted(found.items())]}

  @app.get('/api/run')
  def run_summary(run: str):
    return runs.get(run).summary()

  @app.get('/api/history')
  def history(run: str):
    from mnist_jax.store import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
    return {'run': run, 'history': workdir_lib.load_history(runs.path(run))}

  @app.post('/api/predict')
  async def predict(request: Request, run: str, inside: bool = False):
    if int(request.headers.get('content-length') or 0) > MAX_UPLOAD:
      raise UserError(f'the image is over the {MAX_UPLOAD // 2**20} MB limit; pass a '
                      'smaller picture')
    data = await request.body()
    return await run_in_threadpool(lambda: runs.get(run).predict(decode_upload(data), inside))

  @app.get('/api/confusion')
  def confusion(run: str):
    return runs.get(run).confusion()

  @app.get('/api/cell')
  def cell(run: str, true: int = Query(ge=0), pred: int = Query(ge=0)):
    loaded = runs.get(run)
    classes = loaded.test_view()['probs'].shape[-1]
    if true >= classes or pred >= classes:
      raise UserError(f'classes are 0..{classes - 1}; pick a cell of the matrix')
    return loaded.cell(true, pred)

  return app


def bind(host: str, port: int) -> socket.socket:
  """A listening socket on host:port; UserError when the port is taken."""
  family = socket.AF_INET6 if ':' in host else socket.AF_INET
  sock = socket.socket(family, socket.SOCK_STREAM)
  try:
    sock.bind((host, port))
  except OSError as e:
    sock.close()
    reason = 'is in use' if e.errno in (98, 48, 10048) else f'cannot be opened ({e.strerror})'
    raise UserError(f'port {port} on {host} {reason}; pass another --port (or stop the '
                    'program using it)') from None
  sock.listen(128)
  sock.setblocking(False)
  return sock


def url(sock: socket.socket) -> str:
  host, port = sock.getsockname()[:2]
  return f'http://[{host}]:{port}/' if ':' in host else f'http://{host}:{port}/'


def make_server(app):
  """A uvicorn server for ``app``, quiet but for errors; run it with
  ``.run(sockets=[bind(host, port)])``."""
  import uvicorn  # pylint: disable=g-import-not-at-top
  return uvicorn.Server(uvicorn.Config(app, log_level='warning', access_log=False))


def serve(*, workdir=None, runs=None, host: str = '127.0.0.1', port: int = 8000,
          which: str = 'best', announce=print) -> None:
  """Serves the page until interrupted; ``announce`` gets the one start line."""
  root, single = check_root(workdir, runs)
  sock = bind(host, port)
  app = create_app(root, single, which, host)
  count = len(find_runs(root, single))
  announce(f"serving {count} run{'s' if count != 1 else ''} under {root} at {url(sock)} "
           '(Ctrl+C to stop)')
  make_server(app).run(sockets=[sock])
