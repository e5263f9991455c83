"""Latency of one prediction on the serve page: a drawing (PNG) in, probabilities out.

  python -m experiments.inspection.serve_latency --runs=runs/serve_demo [--run=lenet] [--n=200]

Serves the runs as ``python -m mnist_jax.serve`` does (uvicorn on a free
loopback port, in this process), loads the run once (its forward passes compile
then), and times, after 10 warm-up requests, ``--n`` sequential requests of a
280x280 PNG drawing of a 7, the page's pad size:
  predict   POST /api/predict: PNG decode, prepare_image (steps returned),
            softmax(f(x)): what the page asks while you draw
  inside    POST /api/predict?inside=1: also every conv layer's maps and the
            saliency ∂z_k/∂x: what it asks when a stroke ends
  library   LiveRun.predict in-process, no HTTP (the same work as 'predict')
  page      in Chromium (--chromium, default Debian's /usr/bin/chromium; skipped
            if absent): a 7 drawn with the mouse in 200 moves; the page's own
            measure per prediction it asked while drawing, from the pad's state
            to its bars shown (PNG encoding, request, JSON, drawing the bars)
Medians and 90th percentiles in ms to experiments/results/serve_latency.md.
"""
import io
import os
import threading
import time

import httpx
import numpy as np
from absl import app, flags
from PIL import Image, ImageDraw

from experiments import report
from mnist_jax.inspection import server

_RUNS = flags.DEFINE_string('runs', None, 'Folder of runs (experiments.inspection.serve_runs).',
                            required=True)
_RUN = flags.DEFINE_string('run', 'lenet', 'The run to predict with.')
_N = flags.DEFINE_integer('n', 200, 'Timed requests per row.')
_CHROMIUM = flags.DEFINE_string('chromium', '/usr/bin/chromium', 'Chromium for the page row '
                                '(skipped if absent).')
_OUT = flags.DEFINE_string('out', os.path.join(report.RESULTS, 'serve_latency.md'),
                           'Markdown file of the table.')


def seven_png() -> bytes:
  image = Image.new('RGB', (280, 280), 'white')
  ImageDraw.Draw(image).line([(70, 60), (210, 60), (120, 240)], fill='black', width=18)
  buf = io.BytesIO()
  image.save(buf, 'PNG')
  return buf.getvalue()


def timed(fn, n):
  for _ in range(10):
    fn()
  times = []
  for _ in range(n):
    start = time.perf_counter()
    fn()
    times.append(1000 * (time.perf_counter() - start))
  return np.median(times), np.percentile(times, 90)


def browser_latencies(url, run, chromium):
  """The page's measured ms per while-drawing prediction, for a 7 drawn in 200 moves."""
  from playwright.sync_api import sync_playwright  # pylint: disable=g-import-not-at-top
  with sync_playwright() as p:
    browser = p.chromium.launch(executable_path=chromium, args=['--no-sandbox'])
    page = browser.new_page()
    page.goto(f'{url}?run={run}')
    page.wait_for_selector('body[data-ready="1"]')
    box = page.locator('#pad').bounding_box()
    corners = [(70, 60), (210, 60), (120, 240)]
    page.mouse.move(box['x'] + 70, box['y'] + 60)
    page.mouse.down()
    for (x0, y0), (x1, y1) in zip(corners, corners[1:]):
      for t in np.linspace(0, 1, 101)[1:]:
        page.mouse.move(box['x'] + x0 + t * (x1 - x0), box['y'] + y0 + t * (y1 - y0))
        page.wait_for_timeout(5)
    page.mouse.up()
    page.wait_for_selector('body[data-settled="1"]')
    ms = page.evaluate('page.latencies.filter((l) => !l.inside).map((l) => l.ms)')
    browser.close()
  return ms


def main(argv):
  del argv
  run, n = _RUN.value, _N.value
  site = server.create_app(os.path.abspath(_RUNS.value))
  sock = server.bind('127.0.0.1', 0)
  uv = server.make_server(site)
  threading.Thread(target=uv.run, kwargs={'sockets': [sock]}, daemon=True).start()
  while not uv.started:
    time.sleep(0.05)
  body = seven_png()
  with httpx.Client(base_url=server.url(sock), timeout=300) as http:
    start = time.perf_counter()
    first = http.get('/api/run', params={'run': run})
    first.raise_for_status()
    load_s = time.perf_counter() - start
    answer = http.post('/api/predict', params={'run': run}, content=body).json()
    rows = []
    for name, params in (('predict', {'run': run}), ('inside', {'run': run, 'inside': 1})):
      rows.append((name, *timed(lambda p=params: http.post('/api/predict', params=p,
                                                           content=body).raise_for_status(),
                                n)))
  picture = np.asarray(Image.open(io.BytesIO(body)))
  loaded = site.state.runs.get(run)
  rows.append(('library', *timed(lambda: loaded.predict(picture), n)))
  if os.path.exists(_CHROMIUM.value):
    page_ms = browser_latencies(server.url(sock), run, _CHROMIUM.value)
    rows.append((f'page ({len(page_ms)} predictions while drawing)', np.median(page_ms),
                 np.percentile(page_ms, 90)))
  uv.should_exit = True
  lines = [
      '# Serve page latency: one prediction, drawing in -> probabilities out',
      '', f'`{report.command()}`', '',
      f'{report.machine()} Run `{run}` under `{_RUNS.value}` '
      f"({first.json()['model']}, {first.json()['which']} checkpoint, epoch "
      f"{first.json()['epoch']}); the 7 drawn is predicted {answer['digit_class']}. "
      f'Loading the run (restore + compiling its forward passes): {load_s:.1f} s, once.',
      f'{n} sequential requests after 10 warm-up ones (predict, inside, library).',
      'The server and the browser share the machine.',
      '',
      '| request | median ms | 90th percentile ms |',
      '|---|---:|---:|']
  lines += [f'| {name} | {median:.1f} | {p90:.1f} |' for name, median, p90 in rows]
  report.write_markdown(_OUT.value, lines)


if __name__ == '__main__':
  app.run(main)
