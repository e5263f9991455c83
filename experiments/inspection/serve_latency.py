"""Latency of one prediction on the serve page: a drawing (PNG) in, probabilities out.

  python experiments/inspection/serve_latency.py --runs=runs/serve_demo [--run=lenet] [--n=200]

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
import argparse
import io
import os
import sys
import threading
import time

import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
# pylint: disable=g-import-not-at-top,wrong-import-position
import hardware
import httpx
from mnist_jax.inspection import server
# pylint: enable=g-import-not-at-top,wrong-import-position

OUT = os.path.join(ROOT, 'experiments', 'results', 'serve_latency.md')


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


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--runs', required=True, help='folder of runs (experiments/inspection/serve_runs.py)')
  parser.add_argument('--run', default='lenet')
  parser.add_argument('--n', type=int, default=200)
  parser.add_argument('--chromium', default='/usr/bin/chromium')
  args = parser.parse_args()
  root = os.path.abspath(args.runs)
  app = server.create_app(root)
  sock = server.bind('127.0.0.1', 0)
  uv = server.make_server(app)
  threading.Thread(target=uv.run, kwargs={'sockets': [sock]}, daemon=True).start()
  while not uv.started:
    time.sleep(0.05)
  body = seven_png()
  with httpx.Client(base_url=server.url(sock), timeout=300) as http:
    start = time.perf_counter()
    first = http.get('/api/run', params={'run': args.run})
    first.raise_for_status()
    load_s = time.perf_counter() - start
    answer = http.post('/api/predict', params={'run': args.run}, content=body).json()
    rows = []
    for name, params in (('predict', {'run': args.run}),
                         ('inside', {'run': args.run, 'inside': 1})):
      rows.append((name, *timed(lambda p=params: http.post('/api/predict', params=p,
                                                           content=body).raise_for_status(),
                                args.n)))
  picture = np.asarray(Image.open(io.BytesIO(body)))
  loaded = app.state.runs.get(args.run)
  rows.append(('library', *timed(lambda: loaded.predict(picture), args.n)))
  if os.path.exists(args.chromium):
    page_ms = browser_latencies(server.url(sock), args.run, args.chromium)
    rows.append((f'page ({len(page_ms)} predictions while drawing)', np.median(page_ms),
                 np.percentile(page_ms, 90)))
  uv.should_exit = True
  lines = [
      '# Serve page latency: one prediction, drawing in -> probabilities out',
      '',
      f'Machine: {hardware.describe()}. Run `{args.run}` under `{args.runs}` '
      f"({first.json()['model']}, {first.json()['which']} checkpoint, epoch "
      f"{first.json()['epoch']}); the 7 drawn is predicted {answer['digit_class']}. "
      f'Loading the run (restore + compiling its forward passes): {load_s:.1f} s, once.',
      f'{args.n} sequential requests after 10 warm-up ones (predict, inside, library).',
      'The server and the browser share the machine.',
      '',
      '| request | median ms | 90th percentile ms |',
      '|---|---:|---:|']
  lines += [f'| {name} | {median:.1f} | {p90:.1f} |' for name, median, p90 in rows]
  text = '\n'.join(lines) + '\n'
  os.makedirs(os.path.dirname(OUT), exist_ok=True)
  with open(OUT, 'w') as f:
    f.write(text)
  print(text)


if __name__ == '__main__':
  main()
