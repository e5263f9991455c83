"""A run read back from its workdir (store/workdir.py's layout), for whatever uses it.

``load_run(workdir, 'latest' | 'best')`` rebuilds the config from config.json
(JSON lists become tuples), makes a fresh TrainState as the template and
restores the checkpoint into it; the state carries the run's recorded
preprocessing, so whatever uses it (evaluate, predict, plots, api) feeds the
model what it was trained on. A run with config.ensemble.size = K > 1 holds its
K members stacked in one checkpoint; ``load_run`` gives it back as an
``ensemble.Ensemble``. It works on an ongoing run too: orbax lists only
checkpoints whose write has committed. ``checkpoint_metrics`` is what
``python -m mnist_jax.evaluate`` prints.

``load_trained(workdir, which, weights=None)`` is what predict, the serve page,
api and plots use: the restored checkpoint with the weights that are the model

  weights = the argument, else the run's config.model_weights, else 'raw'
            'raw': the trained weights w;  'ema': the weight EMA (config.ema_decay > 0)

and what the run recorded about its data (data/describe.py): the class count K
and the class names, the standardization (μ, σ) and whether a user's picture
gets the digit steps of inspection/image.py. The state applies the recorded
preprocessing itself, so predictions need nothing else.
"""
import dataclasses
import os
from typing import Any, Optional

import jax
import ml_collections

from mnist_jax import train
from mnist_jax.engine import ensemble, evaluation, stacked
from mnist_jax.store import checkpoint, workdir as workdir_lib
from mnist_jax.config import defaults, overrides as config_overrides
from mnist_jax.data import pipeline
from mnist_jax.errors import UserError

WHICH = ('latest', 'best')


def config_from_json(saved: dict) -> ml_collections.ConfigDict:
  """The ConfigDict of a run from its ``config.json`` contents: today's defaults
  with the saved values written in (config/overrides.py, leniently: the model
  options a run recorded are kept, JSON lists become tuples)."""
  return config_overrides.apply(defaults.get_config(), config_overrides.flat(saved), lenient=True)


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """The config recorded in ``workdir/config.json``."""
  return config_from_json(workdir_lib.read_config_json(workdir))


def load_data(config, data_dir=None) -> pipeline.Dataset:
  """The run's data (``config.data``), read from ``data_dir`` if given."""
  if data_dir:
    config.data.data_dir = data_dir
  try:
    return pipeline.load(config.data)
  except UserError as e:
    raise UserError(f'{e} (or pass --data_dir=DIR to read the data this run used '
                    'from another place)') from None


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
  if ensemble.size(config) > 1:   # the stacked members, as engine/stacked.py saved them
    create = lambda: stacked.create(ensemble.member_configs(config), num_train=num_train,
                                    num_classes=num_classes).state
  else:
    create = lambda: train.create_train_state(config, jax.random.key(config.seed),
                                              num_train=num_train, num_classes=num_classes)
  # shapes only: the checkpoint fills every array, so nothing is initialized or compiled
  template = jax.eval_shape(create)
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


@dataclasses.dataclass(frozen=True)
class Trained:
  """A run's chosen weights and what it recorded. ``state``: a TrainState, or an
  ensemble.Ensemble for an ensemble run (config.ensemble.size > 1)."""
  config: Any
  state: Any
  meta: dict
  weights: str                  # 'raw' | 'ema'
  num_classes: int
  label_names: tuple
  stats: Optional[tuple]        # (μ, σ) of the standardization, None without one
  digits: bool                  # prepare_image's digit steps apply

  @property
  def model(self):
    """The flax module (an ensemble's members share it)."""
    return self.state.model

  @property
  def params(self):
    """The chosen parameters (stacked on axis 0 for an ensemble)."""
    return self.state.params


def model_weights(config, weights: Optional[str] = None) -> str:
  """``weights``, else the run's config.model_weights; UserError if unknown."""
  chosen = weights or config.model_weights
  if chosen not in evaluation.WEIGHTS:
    raise UserError(f"unknown weights '{chosen}'; use weights='raw' or weights='ema' "
                    '(config.model_weights)')
  return chosen


def load_trained(workdir: str, which: str = 'best', *, weights: Optional[str] = None) -> Trained:
  """The ``which`` checkpoint of the run in ``workdir`` with its chosen weights."""
  config, state, meta = load_run(workdir, which)
  chosen = model_weights(config, weights)
  if chosen == 'ema':
    if not state.ema:
      raise UserError(f'the run in {workdir} has no weight EMA (config.ema_decay = 0); '
                      "load its raw weights (weights='raw' / --config.model_weights=raw)")
    state = evaluation.ema_weights(state)
  template = state.template if isinstance(state, ensemble.Ensemble) else state
  d = config.data
  return Trained(config=config, state=state, meta={**meta, 'weights': chosen},
                 weights=chosen, num_classes=int(d.num_classes),
                 label_names=tuple(d.label_names), stats=template.standardize or None,
                 digits=bool(d.digits))


def checkpoint_metrics(workdir: str, which: str = 'best', data_dir=None) -> dict:
  """Val and test metrics of the ``which`` checkpoint of ``workdir``:
  {'workdir', 'which', 'epoch', 'model_weights', 'val': {...}, 'test': {...}}
  where 'val'/'test' are the model's weights (config.model_weights) and
  'val_raw'/'test_raw' or 'val_ema'/'test_ema' the other ones, when the run has
  an EMA (an ensemble run's are the ensemble's)."""
  config = load_config(workdir)
  data = load_data(config, data_dir)
  _, state, meta = load_run(workdir, which, num_classes=data.num_classes)
  weights = config.model_weights
  result = {'workdir': workdir, 'which': which, 'epoch': meta['epoch'],
            'model_weights': weights}
  if isinstance(state, ensemble.Ensemble):
    result['ensemble_size'] = state.size
  names = {'raw': '', 'ema': '_ema'} if weights == 'raw' else {'ema': '', 'raw': '_raw'}
  options = train.compiler_options(config)   # the kernels the run was evaluated with
  for split, images, labels in (('val', data.val_images, data.val_labels),
                                ('test', data.test_images, data.test_labels)):
    if len(labels):
      for w, m in evaluation.split_metrics(
          state, images, labels, config.eval_batch_size,
          compiler_options=options).items():
        result[split + names[w]] = m
  return result


def format_line(result: dict) -> str:
  parts = [f"{split} loss {result[split]['loss']:.4f} accuracy {result[split]['accuracy']:.4f}"
           + (f" ECE {result[split]['ece']:.4f}" if 'ece' in result[split] else '')
           + f" ({result[split]['count']} images)"
           for split in ('val', 'test', 'val_ema', 'test_ema', 'val_raw', 'test_raw')
           if split in result]
  what = (f"ensemble of {result['ensemble_size']}, " if 'ensemble_size' in result else '')
  weights = (f"{result['model_weights']} weights, "
             if result['model_weights'] != 'raw' else '')
  return (f"{result['which']} checkpoint ({what}{weights}epoch {result['epoch']}): "
          + ' | '.join(parts))
