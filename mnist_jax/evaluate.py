"""Command line: validation and test metrics of a saved checkpoint.

  python -m mnist_jax.evaluate --workdir=DIR [--which=best|latest] [--data_dir=DIR]

prints one JSON line and one human line; the metrics are engine/evaluation.py's,
with the preprocessing the run recorded (its train state applies it).
"""
import json

from absl import app, flags

from mnist_jax import cli


def main(argv):
  del argv
  fl = flags.FLAGS
  cli.start()
  with cli.one_line_errors():
    from mnist_jax.engine import rundir  # pylint: disable=g-import-not-at-top
    result = rundir.checkpoint_metrics(fl.workdir, fl.which, fl.data_dir)
  print(json.dumps(result, sort_keys=True))
  print(rundir.format_line(result))


if __name__ == '__main__':
  cli.define_cache_flag()
  flags.DEFINE_string('workdir', None, 'Run directory written by mnist_jax.main.')
  flags.DEFINE_enum('which', 'best', ['best', 'latest'], 'Checkpoint to evaluate.')
  flags.DEFINE_string('data_dir', None, "Override the run's config.data.data_dir.")
  flags.mark_flags_as_required(['workdir'])
  app.run(main, flags_parser=cli.parse_flags)
