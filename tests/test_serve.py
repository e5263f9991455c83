"""The serve page (python -m mnist_jax.serve): its API, its safety, and the page
in a real headless Chromium driven by Playwright.

One folder of runs, trained once: a copy of conftest.py's lenet_run (LeNet-5,
configs/lenet.py at η = 4e-3: 3 epochs on the 4,500-image real-MNIST fixture,
over 95 % test accuracy, so a mouse-drawn 1 and 0 are easy), a 1-epoch MLP (no
conv layer; the second run for overlaid curves), an ensemble of three such MLPs and a run without
checkpoints; the app is served by uvicorn in a background thread.
The browser tests skip when Playwright or Debian's chromium is missing; CI
(.ci/run) installs both, so there they always run.
"""
import base64
import concurrent.futures
import io
import os
import shutil
import socket
import subprocess
import sys
import threading
import time

import httpx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image, ImageDraw

from mnist_jax import api
from mnist_jax.config import defaults, files as config_files
from mnist_jax.data import idx
from mnist_jax.engine import ensemble, evaluation, rundir, stacked, trainer
from mnist_jax.inspection import confusion as confusion_lib, layers as layers_lib, server
from mnist_jax.inspection.image import prepare_image

# pytest-xdist: one worker runs this file, so its runs train once
pytestmark = pytest.mark.xdist_group('serve')

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHROMIUM = '/usr/bin/chromium'
PAD = 280   # the drawing pad's size in px


def _config(path, mnist_small_dir, epochs, **model):
  config = defaults.get_config() if path is None else _load_config(path)
  config.model.update(model)
  config.data.source, config.data.data_dir, config.data.download = 'idx', mnist_small_dir, False
  config.data.val_size, config.batch_size, config.eval_batch_size = 500, 50, 500
  config.num_epochs, config.log_every_steps, config.write_plots = epochs, 90, False
  return config


def _load_config(path):
  return config_files.load(os.path.join(ROOT, path))


@pytest.fixture(scope='session')
def mlp_runs(tmp_path_factory, mnist_small_dir):
  """runs/{mlp, ens, nockpt}: trained while lenet_run's command may still run."""
  root = tmp_path_factory.mktemp('serve') / 'runs'
  mlp = _config('configs/mlp.py', mnist_small_dir, 1)
  mlp.model.hidden = (64,)
  trainer.train_and_evaluate(mlp, str(root / 'mlp'))
  ens = mlp.copy_and_resolve_references()
  ens.ensemble.size = 3
  stacked.train([ens], [str(root / 'ens')])
  (root / 'nockpt').mkdir()
  shutil.copy(root / 'mlp' / 'config.json', root / 'nockpt' / 'config.json')
  return root


@pytest.fixture(scope='session')
def runs_root(mlp_runs, lenet_run):   # in this order: the MLPs train first
  """runs/{lenet, mlp, ens, nockpt} and, next to runs/, a run the server must not serve."""
  root = mlp_runs
  shutil.copytree(lenet_run.workdir, root / 'lenet')
  shutil.copytree(root / 'mlp', root.parent / 'outside')   # a real run outside the root
  os.symlink(root.parent / 'outside', root / 'link_out')   # and a link to it inside
  return str(root)


@pytest.fixture(scope='module')
def app(runs_root):
  return server.create_app(runs_root)


@pytest.fixture(scope='module')
def url(app):
  """The app served by uvicorn on a free loopback port, in a background thread."""
  sock = server.bind('127.0.0.1', 0)
  uv = server.make_server(app)
  thread = threading.Thread(target=uv.run, kwargs={'sockets': [sock]}, daemon=True)
  thread.start()
  for _ in range(600):
    if uv.started:
      break
    time.sleep(0.05)
  assert uv.started, 'uvicorn did not start within 30 s'
  yield server.url(sock)
  uv.should_exit = True
  thread.join(10)
  sock.close()


@pytest.fixture(scope='module')
def client(url):
  """An HTTP client of the running server."""
  with httpx.Client(base_url=url, timeout=120) as http:
    yield http


@pytest.fixture(scope='module')
def best(runs_root):
  _, state, _ = rundir.load_run(os.path.join(runs_root, 'lenet'), 'best')
  return state


def png(image: Image.Image) -> bytes:
  buf = io.BytesIO()
  image.save(buf, 'PNG')
  return buf.getvalue()


def unpack(data: str, dtype) -> np.ndarray:
  return np.frombuffer(base64.b64decode(data), dtype)


def drawn(digit: str, width: int = 18, tilt: int = 0) -> Image.Image:
  """A thick pen drawing of '1' or '0', black on white, like the pad's."""
  image = Image.new('RGB', (PAD, PAD), 'white')
  pen = ImageDraw.Draw(image)
  if digit == '1':
    pen.line([(140 + tilt, 45), (140 - tilt, 235)], fill='black', width=width)
  else:
    pen.ellipse([(85 + tilt, 45), (195 - tilt, 235)], outline='black', width=width)
  return image


def stroke_points(digit: str):
  if digit == '1':
    return [(145, 45 + 10 * t) for t in range(20)]
  angles = np.linspace(0, 2 * np.pi, 41)
  return [(140 + 55 * np.sin(a), 140 - 95 * np.cos(a)) for a in angles]


# ---- the API ------------------------------------------------------------------------

def test_runs_are_the_run_directories_under_the_root(client):
  runs = {r['id']: r for r in client.get('/api/runs').json()['runs']}
  assert set(runs) == {'lenet', 'mlp', 'ens', 'nockpt'}   # not link_out: it leads outside
  assert runs['lenet']['model'] == 'lenet5' and runs['lenet']['epochs'] == 3
  assert runs['lenet']['checkpoints'] and not runs['nockpt']['checkpoints']


@pytest.mark.parametrize('run_id', ['../outside', '..', '/etc', 'link_out', 'lenet/../../outside',
                                    'lenet/checkpoints'])
def test_only_runs_under_the_root_are_served(client, run_id):
  for path in ('/api/run', '/api/history', '/api/confusion'):
    response = client.get(path, params={'run': run_id})
    assert response.status_code == 404, (path, response.text)
    assert response.json()['error'].startswith(f"no run '{run_id}' under ")


def test_bad_requests_answer_one_line_and_the_server_keeps_running(client, runs_root):
  cases = [(b'', 'the request has no image'),
           (bytes(server.MAX_UPLOAD + 1), 'the image is over the 20 MB limit'),
           (b'hello, not an image', 'cannot read image upload (not an image format'),
           (png(Image.new('RGB', (60, 60), 'white')), 'the image is blank')]
  for body, message in cases:
    response = client.post('/api/predict', params={'run': 'lenet'}, content=body)
    assert response.status_code == 400 and response.json()['error'].startswith(message)
    assert '\n' not in response.json()['error']
  response = client.get('/api/run', params={'run': 'nockpt'})
  assert response.status_code == 400
  assert response.json()['error'].startswith('no best checkpoint in ' + runs_root)
  response = client.get('/api/cell', params={'run': 'lenet', 'true': 10, 'pred': 0})
  assert response.status_code == 400 and 'classes are 0..9' in response.json()['error']
  assert client.get('/api/run').json()['error'].startswith('bad request (query.run')
  # another Host than the loopback (a DNS-rebinding page) is refused
  assert client.get('/api/runs', headers={'host': 'evil.example'}).status_code == 400
  response = client.post('/api/predict', params={'run': 'lenet'}, content=png(drawn('1')))
  assert response.status_code == 200 and response.json()['digit_class'] == 1


def test_predict_is_the_library_on_the_prepared_digit(client, best):
  for digit in ('1', '0'):
    image = drawn(digit)
    r = client.post('/api/predict', params={'run': 'lenet'}, content=png(image)).json()
    prepared = prepare_image(np.asarray(image))
    expected = evaluation.predict(best, prepared[None])[0]
    assert r['digit_class'] == int(digit)
    np.testing.assert_allclose(r['probs'], expected, atol=1e-6)
    assert np.array_equal(unpack(r['digit'], np.uint8).reshape(28, 28), prepared)
    assert [s['title'] for s in r['steps']] == ['grayscale', 'ink bright', 'stretched',
                                                 'cropped', 'resized', 'centred']


def test_an_ensemble_predicts_its_members_mean_with_their_spread(client, runs_root):
  _, ens = api.load(os.path.join(runs_root, 'ens'))
  assert client.get('/api/run', params={'run': 'ens'}).json()['ensemble'] == 3
  assert client.get('/api/run', params={'run': 'mlp'}).json()['ensemble'] == 1
  for digit, inside in (('1', 0), ('0', 1)):
    image = drawn(digit)
    r = client.post('/api/predict', params={'run': 'ens', 'inside': inside},
                    content=png(image)).json()
    prepared = prepare_image(np.asarray(image))
    members = np.asarray(r['members'])
    assert members.shape == (3, 10)
    np.testing.assert_allclose(members.mean(0), r['probs'], atol=1e-5)
    np.testing.assert_allclose(r['probs'], api.predict(ens, prepared), atol=1e-5)
    expected = evaluation.predict_members(ens, prepared[None])[:, 0]
    np.testing.assert_allclose(members, expected, atol=1e-6)
    assert np.ptp(members, axis=0).max() > 1e-4   # three seeds: three different models
    d = ensemble.disagreement(expected[:, None])
    assert r['spread'] == pytest.approx(float(d['spread'][0]), abs=1e-6)
    assert r['dissent'] == pytest.approx(float(d['dissent'][0]))
    assert r['digit_class'] == int(np.argmax(r['probs']))
  single = client.post('/api/predict', params={'run': 'mlp'}, content=png(drawn('1'))).json()
  assert not {'members', 'spread', 'dissent'} & set(single)


def _dequantize(data, scales, shape):
  q = unpack(data, np.int8).reshape(len(scales), *shape)
  return q / 127.0 * np.asarray(scales)[:, None, None]


def test_feature_maps_and_saliency_are_the_layers_and_the_gradient(client, best):
  image = drawn('0')
  r = client.post('/api/predict', params={'run': 'lenet', 'inside': 1}, content=png(image)).json()
  prepared = prepare_image(np.asarray(image))
  layers = layers_lib.capture_layers(best, prepared[None, ..., None], ('conv',))
  assert [m['name'] for m in r['maps']] == [name for name, _, _ in layers] == ['C1', 'C3']
  for m, (_, _, out) in zip(r['maps'], layers):
    maps = _dequantize(m['data'], m['scales'], out.shape[1:3])
    want = np.moveaxis(out[0], -1, 0)[:len(m['scales'])]
    assert np.abs(maps - want).max() <= np.abs(want).max() / 127 + 1e-5
  x = jnp.asarray(prepared[None, ..., None] / 255.0, jnp.float32)
  k = r['digit_class']
  grad = jax.jit(jax.grad(lambda x: best.apply_fn(best.variables, best.inputs(x),
                                                   train=False)[0, k]))(x)
  grad = np.asarray(grad)[0, ..., 0]
  saliency = _dequantize(r['saliency']['data'], [r['saliency']['scale']], (28, 28))[0]
  assert np.abs(grad).max() > 0
  assert np.abs(saliency - grad).max() <= np.abs(grad).max() / 127 + 1e-6


def test_run_summary_has_the_receptive_fields_of_the_explainer(client):
  r = client.get('/api/run', params={'run': 'lenet'}).json()
  # C1: 5x5, pad 2; S2 pool 2; C3: 5x5 valid -> RF 5 and 14, jumps 1 and 2, start -2
  assert r['layers'] == [
      {'name': 'C1', 'shape': [28, 28, 6], 'rf': [5, 5], 'jump': [1.0, 1.0], 'start': [-2.0, -2.0]},
      {'name': 'C3', 'shape': [10, 10, 16], 'rf': [14, 14], 'jump': [2.0, 2.0],
       'start': [-2.0, -2.0]}]
  assert len(r['history']) == 3 and r['config']['model']['name'] == 'lenet5'
  assert client.get('/api/run', params={'run': 'mlp'}).json()['layers'] == []


def test_confusion_and_its_cells_are_the_test_predictions(client, best, mnist_small_dir):
  images, labels = idx.load_split(mnist_small_dir, 'test')
  preds = evaluation.predict(best, images).argmax(-1)
  c = client.get('/api/confusion', params={'run': 'lenet'}).json()
  assert np.array_equal(c['matrix'], confusion_lib.confusion_matrix(labels, preds))
  assert c['accuracy'] == pytest.approx(np.mean(preds == labels)) and c['accuracy'] > 0.95
  assert all(d['label'] != d['pred'] for d in c['mistakes'])
  assert [d['p'] for d in c['mistakes']] == sorted((d['p'] for d in c['mistakes']), reverse=True)
  i, j = 4, 9
  cell = client.get('/api/cell', params={'run': 'lenet', 'true': i, 'pred': j}).json()
  assert cell['count'] == c['matrix'][i][j]
  assert [d['index'] for d in cell['digits']] == list(
      np.flatnonzero((labels == i) & (preds == j))[:48])


def test_twenty_parallel_predictions(url, best):
  images = [drawn('1' if n % 2 else '0', width=12 + n % 5 * 3, tilt=n - 10) for n in range(20)]
  expected = evaluation.predict(best, np.stack([prepare_image(np.asarray(i))
                                                      for i in images]))

  def ask(n):
    with httpx.Client(timeout=60) as http:
      return http.post(f'{url}api/predict', params={'run': 'lenet', 'inside': n % 3 == 0},
                       content=png(images[n]))

  with concurrent.futures.ThreadPoolExecutor(20) as pool:
    responses = list(pool.map(ask, range(20)))
  assert [r.status_code for r in responses] == [200] * 20
  for r, want in zip(responses, expected):
    np.testing.assert_allclose(r.json()['probs'], want, atol=1e-6)
  assert [r.json()['digit_class'] for r in responses] == [1 if n % 2 else 0 for n in range(20)]


def _serve(*args):
  return subprocess.Popen([sys.executable, '-m', 'mnist_jax.serve', *args], cwd=ROOT,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_the_command_serves_the_page_and_a_taken_port_is_one_line(runs_root):
  with socket.socket() as probe:
    probe.bind(('127.0.0.1', 0))
    port = probe.getsockname()[1]
  first = _serve(f'--runs={runs_root}', f'--port={port}')
  try:
    line = first.stdout.readline()
    if not line.startswith(f'serving 4 runs under {runs_root} at http://127.0.0.1:{port}/'):
      first.terminate()   # stop it first: its stderr ends only when it exits
      pytest.fail(f'first line {line!r}; stderr: {first.communicate(timeout=30)[1][-2000:]}')
    page = httpx.get(f'http://127.0.0.1:{port}/', timeout=30)
    assert page.status_code == 200 and '<canvas id="pad"' in page.text
    for asset in ('app.js', 'style.css'):
      assert httpx.get(f'http://127.0.0.1:{port}/static/{asset}', timeout=30).status_code == 200
    assert 'http://' not in page.text and 'https://' not in page.text   # no CDN
    second = _serve(f'--workdir={runs_root}/lenet', f'--port={port}')
    out, err = second.communicate(timeout=120)
    assert second.returncode == 2 and out == ''
    assert err.strip().splitlines()[-1] == (f'error: port {port} on 127.0.0.1 is in use; pass '
                                            'another --port (or stop the program using it)')
    assert httpx.get(f'http://127.0.0.1:{port}/api/runs', timeout=30).status_code == 200
  finally:
    first.terminate()
    first.wait(30)
  bad = _serve(f'--workdir={runs_root}', '--port=0')
  _, err = bad.communicate(timeout=120)
  assert bad.returncode == 2 and err.strip().splitlines()[-1].startswith(
      f'error: {runs_root} has no config.json, so it is not a training run')


# ---- the page in Chromium -------------------------------------------------------------

@pytest.fixture(scope='module')
def browser():
  playwright_api = pytest.importorskip(
      'playwright.sync_api', reason='Playwright is not installed (pip install -e .[test]; '
      'CI installs it, so there the browser tests always run)')
  if not os.path.exists(CHROMIUM):
    pytest.skip(f'{CHROMIUM} is missing (apt-get install chromium; .ci/run installs it, so '
                'in CI the browser tests always run)')
  with playwright_api.sync_playwright() as p:
    chromium = p.chromium.launch(executable_path=CHROMIUM, args=['--no-sandbox'])
    yield chromium
    chromium.close()


@pytest.fixture
def page(browser, url):
  tab = browser.new_page(viewport={'width': 1400, 'height': 1000})
  errors = []
  tab.on('pageerror', lambda e: errors.append(str(e)))
  tab.goto(f'{url}?run=lenet')
  tab.wait_for_selector('body[data-ready="1"]')
  yield tab
  tab.close()
  assert not errors, errors


def draw(page, digit):
  box = page.locator('#pad').bounding_box()
  points = stroke_points(digit)
  page.mouse.move(box['x'] + points[0][0], box['y'] + points[0][1])
  page.mouse.down()
  for x, y in points[1:]:
    page.mouse.move(box['x'] + x, box['y'] + y, steps=2)
  page.mouse.up()
  page.wait_for_selector('body[data-settled="1"]')


def predicted(page):
  return page.locator('#predicted').get_attribute('data-digit')


def test_draw_a_one_and_a_zero_with_the_mouse(page):
  draw(page, '1')
  assert predicted(page) == '1'
  assert page.locator('#steps figure').count() == 6
  assert page.locator('.layer').count() == 2 and page.locator('.map').count() == 6 + 16
  page.click('#clear')
  assert predicted(page) is None
  draw(page, '0')
  assert predicted(page) == '0'
  widths = [page.locator(f'.bar-row[data-digit="{k}"] .bar').evaluate('e => e.style.width')
            for k in range(10)]
  assert float(widths[0][:-1]) > 50 and page.locator('.bar-row.top').get_attribute(
      'data-digit') == '0'


def test_upload_and_drop_a_png_and_a_non_image(page, mnist_small_dir, tmp_path):
  images, labels = idx.load_split(mnist_small_dir, 'test')
  for i in range(3):   # three test digits, dark on light and 4x larger like a photo
    path = tmp_path / f'digit{i}.png'
    Image.fromarray(255 - images[i, ..., 0]).resize((112, 112)).save(path)
    if i < 2:
      page.set_input_files('#file', str(path))
    else:    # a real drop event with the file in its DataTransfer
      data = list(path.read_bytes())
      transfer = page.evaluate_handle(
          '''(data) => { const t = new DataTransfer();
             t.items.add(new File([new Uint8Array(data)], 'digit.png', {type: 'image/png'}));
             return t; }''', data)
      page.dispatch_event('#pad', 'drop', {'dataTransfer': transfer})
    page.wait_for_selector('body[data-settled="1"]')
    assert predicted(page) == str(labels[i]), i
    assert page.locator('#message').is_hidden()
  bad = tmp_path / 'notes.png'
  bad.write_text('not a picture')
  page.set_input_files('#file', str(bad))
  page.wait_for_selector('#message:not([hidden])')
  assert page.locator('#message').inner_text().startswith('cannot read image upload')
  draw(page, '1')   # the server kept running
  assert predicted(page) == '1' and page.locator('#message').is_hidden()


def test_clicking_a_feature_map_pixel_outlines_its_receptive_field(page):
  draw(page, '1')
  for layer, (rf, jump, start) in enumerate([(5, 1, -2), (14, 2, -2)]):
    i, j = (10, 7) if layer == 0 else (4, 3)
    canvas = page.locator(f'.map[data-layer="{layer}"][data-map="1"]')
    box = canvas.bounding_box()
    h, w = (28, 28) if layer == 0 else (10, 10)
    canvas.click(position={'x': (j + 0.5) * box['width'] / w, 'y': (i + 0.5) * box['height'] / h})
    outline = page.locator('#rf-box').bounding_box()
    image = page.locator('#input').bounding_box()
    scale = image['width'] / 28
    assert scale == 8
    assert outline['width'] == pytest.approx(rf * scale, abs=0.5)
    assert outline['height'] == pytest.approx(rf * scale, abs=0.5)
    assert outline['x'] - image['x'] == pytest.approx((start + j * jump) * scale, abs=0.5)
    assert outline['y'] - image['y'] == pytest.approx((start + i * jump) * scale, abs=0.5)
    assert f'RF {rf}×{rf} px' in page.locator('#rf-info').inner_text()


def test_the_run_view_curves_confusion_cells_mistakes_config(page, client):
  page.click('#tab-run')
  page.wait_for_selector('#confusion td')
  assert page.locator('#confusion td').count() == 100
  matrix = np.array(client.get('/api/confusion', params={'run': 'lenet'}).json()['matrix'])
  off = np.where(np.eye(10, dtype=bool), 0, matrix)
  i, j = np.unravel_index(off.argmax(), off.shape)
  page.click(f'#confusion td[data-true="{i}"][data-pred="{j}"]')
  page.wait_for_function(f'document.querySelectorAll("#cell-digits figure").length === '
                         f'{min(48, matrix[i, j])}')
  assert page.locator('#mistakes figure').count() == min(24, off.sum())
  assert '"lenet5"' in page.locator('#config').inner_text()
  ink = page.evaluate('''() => { const c = document.getElementById('curves');
      const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
      let n = 0; for (let i = 0; i < d.length; i += 4) if (d[i + 3] && d[i + 2] > d[i] + 80) n++;
      return n; }''')   # blue-ish pixels: the train curves
  assert ink > 50
  page.select_option('#compare', 'mlp')
  page.wait_for_function('document.getElementById("curves-legend").textContent.includes("mlp")')
  assert 'dashed: mlp' in page.locator('#curves-legend').inner_text()


def test_a_run_without_checkpoints_shows_one_message(page):
  page.select_option('#run', 'nockpt')
  page.wait_for_selector('#message:not([hidden])')
  assert page.locator('#message').inner_text().startswith('no best checkpoint in ')
  page.select_option('#run', 'mlp')
  page.wait_for_selector('#message', state='hidden')
  draw(page, '1')
  assert predicted(page) is not None
  assert 'no conv layer' in page.locator('#maps').inner_text()


def test_an_ensemble_run_draws_its_members_on_the_bars(page):
  page.select_option('#run', 'ens')
  page.wait_for_function('document.getElementById("run-info").textContent.includes("ensemble of 3")')
  draw(page, '1')
  assert page.locator('.bar-track .tick').count() == 3 * 10
  assert page.locator('.bar-track .whisker').count() == 10
  top = page.locator('.bar-row.top')
  bar = top.locator('.bar').bounding_box()
  ticks = [t.bounding_box() for t in top.locator('.tick').all()]
  mean_x = np.mean([t['x'] + t['width'] / 2 for t in ticks])
  assert mean_x == pytest.approx(bar['x'] + bar['width'], abs=2)   # the bar ends at their mean
  assert page.locator('#spread').inner_text().startswith('Ensemble of 3')
  assert 'Member 0' in page.locator('#saliency-info').inner_text()
  page.select_option('#run', 'mlp')
  page.wait_for_selector('#message', state='hidden')
  draw(page, '1')
  assert page.locator('.tick').count() == 0 and page.locator('#spread').inner_text() == ''


def test_the_page_server_imports_no_matplotlib(tmp_path):
  """The server, its app and the loaded-run module draw nothing: matplotlib (0.6 s
  of imports) stays out of the page's process."""
  code = ('import sys; from mnist_jax import serve; from mnist_jax.inspection import live, '
          f'server; server.create_app({str(tmp_path)!r}); '
          'print(sorted(m for m in sys.modules if m.split(".")[0] == "matplotlib"))')
  out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                       check=True, cwd=ROOT)
  assert out.stdout.strip() == '[]', out.stdout
