"""Config files: ``get_config()`` of a ``configs/*.py`` file, loaded by its path.

configs/ is a folder of files, not a package: ``--config=`` flags load theirs
through ml_collections; code (tests, experiments, a config built on another)
loads them here.
"""
import importlib.util
import os

import ml_collections


def load(path: str) -> ml_collections.ConfigDict:
  """``get_config()`` of the config file ``path``."""
  name = os.path.splitext(os.path.basename(path))[0]
  spec = importlib.util.spec_from_file_location(f'_config_{name}', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def sibling(config_file: str, name: str) -> ml_collections.ConfigDict:
  """``get_config()`` of ``<name>.py`` in the folder of ``config_file`` (a config
  built on another)."""
  return load(os.path.join(os.path.dirname(os.path.abspath(config_file)), name + '.py'))
