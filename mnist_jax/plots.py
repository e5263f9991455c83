"""Command line: pictures of a run, as PNG files in ``WORKDIR/plots/`` and in TensorBoard.

  python -m mnist_jax.plots --workdir=DIR [--which=latest|best] [--data_dir=DIR]

What each picture shows: inspection/figures.py.
"""
from absl import app, flags

from mnist_jax import cli


def main(argv):
  del argv
  from mnist_jax.engine import rundir  # pylint: disable=g-import-not-at-top
  from mnist_jax.inspection import figures  # pylint: disable=g-import-not-at-top  (matplotlib)
  fl = flags.FLAGS
  cli.start()
  with cli.one_line_errors():
    run = rundir.load_trained(fl.workdir, fl.which)
    data = rundir.load_data(run.config, fl.data_dir)
    paths = figures.write_all(fl.workdir, run.config, run.state, data,
                              tensorboard=fl.tensorboard)
    meta = run.meta
  print(f"{len(paths)} plots of the {fl.which} checkpoint (epoch {meta['epoch']}):")
  print('\n'.join(paths))


if __name__ == '__main__':
  cli.define_cache_flag()
  flags.DEFINE_string('workdir', None, 'Run directory written by mnist_jax.main.')
  flags.DEFINE_enum('which', 'latest', ['latest', 'best'], 'Checkpoint to plot.')
  flags.DEFINE_string('data_dir', None, "Override the run's config.data.data_dir.")
  flags.DEFINE_bool('tensorboard', True, 'Also add the plots to the TensorBoard run.')
  flags.mark_flags_as_required(['workdir'])
  app.run(main, flags_parser=cli.parse_flags)
