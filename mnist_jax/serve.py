"""Command line: a local web page to draw a digit and see inside a trained run.

  python -m mnist_jax.serve --workdir=RUN          # one run
  python -m mnist_jax.serve --runs=runs/           # pick among the runs under a folder
      [--host=127.0.0.1] [--port=8000] [--which=best|latest]

prints the page's address and serves until Ctrl+C (inspection/server.py: the
app; inspection/static/: the page). A taken port or a folder without runs
prints one line and exits with status 2.
"""
from absl import app, flags

from mnist_jax import cli


def main(argv):
  del argv
  fl = flags.FLAGS
  cli.start()
  from mnist_jax.inspection import server  # pylint: disable=g-import-not-at-top
  with cli.one_line_errors():
    server.serve(workdir=fl.workdir, runs=fl.runs, host=fl.host, port=fl.port,
                 which=fl.which, announce=lambda line: print(line, flush=True))


if __name__ == '__main__':
  cli.define_cache_flag()
  flags.DEFINE_string('workdir', None, 'A run directory written by mnist_jax.main.')
  flags.DEFINE_string('runs', None, 'A folder of run directories to pick from.')
  flags.DEFINE_string('host', '127.0.0.1', 'Address to listen on (default: this machine only).')
  flags.DEFINE_integer('port', 8000, 'Port to listen on.', lower_bound=0, upper_bound=65535)
  flags.DEFINE_enum('which', 'best', ['best', 'latest'], 'Checkpoint of each run to use.')
  app.run(main, flags_parser=cli.parse_flags)
