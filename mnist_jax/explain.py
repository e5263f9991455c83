"""Command line: the model explainer — per layer the shapes, parameters, MACs,
receptive field and jump of a config's model (inspection/explain.py).

  python -m mnist_jax.explain --config=configs/lenet.py
"""
from absl import app
from ml_collections import config_flags

from mnist_jax import cli

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Model config (configs/*.py).',
                                          lock_config=True)


def main(argv):
  del argv
  cli.quiet_logs()
  from mnist_jax.inspection import explain  # pylint: disable=g-import-not-at-top
  if _CONFIG.value is None:
    cli.fail('--config is required; pass e.g. --config=configs/lenet.py')
  with cli.one_line_errors():
    print(explain.describe(_CONFIG.value.model))


if __name__ == '__main__':
  app.run(main, flags_parser=cli.parse_flags)
