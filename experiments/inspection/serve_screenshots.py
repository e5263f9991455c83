"""The README's screenshots of the serve page, taken in headless Chromium.

  python -m experiments.inspection.serve_screenshots --runs=runs/serve_demo [--chromium=/usr/bin/chromium]

Serves the runs (experiments/inspection/serve_runs.py) as ``python -m mnist_jax.serve``
does, opens the page in Debian's chromium with Playwright, and as a user would:
draws a 7 with the mouse, clicks a pixel of a C3 feature map (its receptive
field is outlined on the input), then opens the run view, overlays the MLP's
curves and clicks the most populated off-diagonal confusion cell. Writes
experiments/results/serve_digit.png and serve_run.png, and prints the command
and the machine (a PNG holds no command line).
"""
import os
import threading
import time

from absl import app, flags
from playwright.sync_api import sync_playwright

from experiments import report
from mnist_jax.inspection import server

_RUNS = flags.DEFINE_string('runs', None, 'Folder of runs (experiments.inspection.serve_runs).',
                            required=True)
_RUN = flags.DEFINE_string('run', 'lenet', 'The run the digit view opens.')
_COMPARE = flags.DEFINE_string('compare', 'mlp', "The run overlaid on the run view's curves.")
_CHROMIUM = flags.DEFINE_string('chromium', '/usr/bin/chromium', 'The Chromium to drive.')
SEVEN = [(70, 62), (140, 60), (210, 58), (180, 110), (150, 170), (125, 235)]


def stroke(page, points):
  box = page.locator('#pad').bounding_box()
  page.mouse.move(box['x'] + points[0][0], box['y'] + points[0][1])
  page.mouse.down()
  for x, y in points[1:]:
    page.mouse.move(box['x'] + x, box['y'] + y, steps=8)
  page.mouse.up()
  page.wait_for_selector('body[data-settled="1"]')


def main(argv):
  del argv
  compare = _COMPARE.value
  site = server.create_app(os.path.abspath(_RUNS.value))
  sock = server.bind('127.0.0.1', 0)
  uv = server.make_server(site)
  threading.Thread(target=uv.run, kwargs={'sockets': [sock]}, daemon=True).start()
  while not uv.started:
    time.sleep(0.05)
  os.makedirs(report.RESULTS, exist_ok=True)
  with sync_playwright() as p:
    browser = p.chromium.launch(executable_path=_CHROMIUM.value, args=['--no-sandbox'])
    page = browser.new_page(viewport={'width': 1360, 'height': 900})
    page.goto(f'{server.url(sock)}?run={_RUN.value}')
    page.wait_for_selector('body[data-ready="1"]')
    stroke(page, SEVEN)
    canvas = page.locator('.map[data-layer="1"][data-map="3"]')
    box = canvas.bounding_box()
    canvas.click(position={'x': 4.5 * box['width'] / 10, 'y': 3.5 * box['height'] / 10})
    print('digit view: predicted', page.locator('#predicted').get_attribute('data-digit'),
          '|', page.locator('#rf-info').inner_text())
    page.screenshot(path=os.path.join(report.RESULTS, 'serve_digit.png'), full_page=True)
    page.click('#tab-run')
    page.wait_for_selector('#confusion td')
    page.select_option('#compare', compare)
    page.wait_for_function(
        f'document.getElementById("curves-legend").textContent.includes("{compare}")')
    cell = page.evaluate('''() => { let best = null, n = -1;
        for (const td of document.querySelectorAll('#confusion td')) {
          const v = Number(td.textContent || 0);
          if (td.dataset.true !== td.dataset.pred && v > n) { n = v; best = td; } }
        return [best.dataset.true, best.dataset.pred]; }''')
    page.click(f'#confusion td[data-true="{cell[0]}"][data-pred="{cell[1]}"]')
    page.wait_for_selector('#cell-digits figure')
    page.evaluate('document.getElementById("config").style.maxHeight = "160px"')
    page.screenshot(path=os.path.join(report.RESULTS, 'serve_run.png'), full_page=True)
    print('run view:', page.locator('#confusion-title').inner_text(), '| cell', cell)
    browser.close()
  uv.should_exit = True
  print(f'`{report.command()}`; {report.machine()}')


if __name__ == '__main__':
  app.run(main)
