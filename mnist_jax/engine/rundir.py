"""Loading a run back from its workdir: config, restored train state, metrics.

A workdir written by ``engine.driver.train`` (``python -m mnist_jax.main``) holds

  config.json              the run's ConfigDict (ConfigDict.to_json_best_effort)
  metrics.jsonl            one JSON record per finished epoch
  checkpoints/latest/<e>   the last checkpoints (orbax)
  checkpoints/best/<e>     the epoch e* = argmax_e val_accuracy(e)

``load_run(workdir, 'latest' | 'best')`` rebuilds the config (JSON lists become
tuples), makes a fresh
TrainState as the template and restores the checkpoint into it; the state
carries the run's recorded preprocessing, so whatever uses it (evaluate,
predict, plots, api) feeds the model what it was trained on. A run with
config.ensemble.size = K > 1 holds its K members stacked in one checkpoint;
``load_run`` gives it back as an ``ensemble.Ensemble``. It works on an
ongoing run too: orbax lists only checkpoints whose write has committed.
"""
import json
import os

import jax
import ml_collections

from mnist_jax import train
from mnist_jax.engine import checkpoint, ensemble, stacked
from mnist_jax.config import defaults, overrides as config_overrides
from mnist_jax.data import pipeline
from mnist_jax.errors import UserError

WHICH = ('latest', 'best')


def config_from_json(saved: dict) -> ml_collections.ConfigDict:
  """The ConfigDict of a run from its ``config.json`` contents: today's defaults
  with the saved values written in (config/overrides.py, leniently: the model
  options a run recorded are kept, JSON lists become tuples)."""
  return config_overrides.apply(defaults.get_config(), defaults.flat(saved), lenient=True)


def read_config_json(workdir: str) -> dict:
  """The contents of ``workdir/config.json``; UserError naming it when it is
  missing or not JSON."""
  path = os.path.join(workdir, 'config.json')
  if not os.path.isfile(path):
    raise UserError(f'{path} not found: {workdir} is not a training run directory; '
                    'pass the --workdir a run of python -m mnist_jax.main wrote')
  try:
    with open(path) as f:
      saved = json.load(f)
  except (OSError, ValueError) as e:
    raise UserError(f'cannot read {path} ({e}); it is damaged: restore that file '
                    'or train again in a new --workdir') from None
  if not isinstance(saved, dict):
    raise UserError(f'{path} holds no config (a JSON {type(saved).__name__}); it is '
                    'damaged: restore that file or train again in a new --workdir')
  return saved


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """The config recorded in ``workdir/config.json``."""
  return config_from_json(read_config_json(workdir))


def load_data(config, data_dir=None) -> pipeline.Dataset:
  """The run's data (``config.data``), read from ``data_dir`` if given."""
  if data_dir:
    config.data.data_dir = data_dir
  try:
    return pipeline.load(config.data)
  except UserError as e:
    raise UserError(f'{e} (or pass --data_dir=DIR to read the data this run used '
                    'from another place)') from None


def load_history(workdir: str) -> list:
  """The epoch records of ``workdir/metrics.jsonl`` ([] if there are none yet);
  UserError naming the file and line of a record that is not a JSON object with
  an 'epoch' (a cut or damaged file: the trainer writes it whole, atomically)."""
  path = os.path.join(workdir, 'metrics.jsonl')
  if not os.path.exists(path):
    return []
  records = []
  with open(path) as f:
    for n, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        record = json.loads(line)
      except ValueError:
        record = None
      if not isinstance(record, dict) or not isinstance(record.get('epoch'), int):
        raise UserError(f'{path} line {n} is not an epoch record (the file is cut or '
                        'damaged); restore the file, or delete it to resume (the '
                        'checkpoints hold the history up to their epoch)')
      records.append(record)
  return records


def checkpoint_dir(workdir: str, which: str) -> str:
  if which not in WHICH:
    raise UserError(f"unknown checkpoint '{which}'; use --which=latest or --which=best")
  return os.path.join(workdir, 'checkpoints', which)


def load_run(workdir: str, which: str = 'latest', *, num_train=None, num_classes=None):
  """(config, state, meta) of the ``which`` checkpoint of the run in ``workdir``
  (state: a TrainState, or an ensemble.Ensemble for an ensemble run).

  meta is the checkpoint's record ({'epoch', 'history', ['val_accuracy']}) plus
  'which' and 'checkpoint' (its directory). The model has the recorded
  config.data.num_classes classes; ``num_train`` sets the optimizer's schedule
  length when training is continued (default: the recorded config.data.num_train).
  """
  config = load_config(workdir)
  directory = checkpoint_dir(workdir, which)
  steps = sorted(int(s) for s in os.listdir(directory) if s.isdigit()) \
      if os.path.isdir(directory) else []
  if not steps:
    hint = (' (the best checkpoint needs a validation split: config.data.val_size > 0)'
            if which == 'best' else '')
    raise UserError(f'no {which} checkpoint in {directory}{hint}; train first with '
                    'python -m mnist_jax.main or pass another --workdir/--which')
  if ensemble.size(config) > 1:   # the stacked members, as the driver saved them
    template = stacked.create(ensemble.member_configs(config), num_train=num_train,
                              num_classes=num_classes).state
  else:
    template = train.create_train_state(config, jax.random.key(config.seed),
                                        num_train=num_train, num_classes=num_classes)
  mngr = checkpoint.reader(directory, best=which == 'best')
  try:
    epoch = checkpoint.best_epoch(mngr) if which == 'best' else None
    state, meta = checkpoint.restore(mngr, template, epoch)
  finally:
    mngr.close()
  if meta is None:
    raise UserError(f'no finished checkpoint in {directory}; wait for the first epoch '
                    'to end or pass another --workdir')
  meta.update(which=which, checkpoint=os.path.join(directory, str(meta['epoch'])))
  if ensemble.size(config) > 1:
    state = ensemble.from_state(state)
  return config, state, meta
