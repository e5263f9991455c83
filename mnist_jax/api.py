"""The notebook API: data -> model -> train -> predict in a few lines.

  from mnist_jax import api
  data = api.load_data('mnist', data_dir=...)          # a pipeline.Dataset (uint8)
  state = api.create('lenet5', learning_rate=1e-3)      # a train.TrainState
  state = api.fit(state, data, steps=200)               # a new TrainState
  probs = api.predict(state, data.test_images[:10])     # numpy (10, 10), rows sum to 1

Pure functions over ``mnist_jax.train``: every call takes what it needs and
returns a new value; nothing is cached between calls. ``fit`` is mini-batch
SGD with the state's optimizer: at global step s (= state.step) it uses batch
s mod ⌊N/B⌋ of the permutation of epoch ⌊s / ⌊N/B⌋⌋, both drawn from ``seed``,
so fit(fit(state, 100 steps), 100 steps) == fit(state, 200 steps).
For long runs with checkpoints and metrics use ``python -m mnist_jax.main``;
``load`` brings such a run into the notebook (an ensemble run, config.ensemble.size
> 1, as an ``Ensemble``: ``predict``/``evaluate`` then use the mean of its members'
probabilities; ``ensemble`` stacks single states into one).
"""
import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from mnist_jax import models, train
from mnist_jax.config import defaults, overrides as config_overrides
from mnist_jax.data import idx, pipeline
from mnist_jax.data import describe
from mnist_jax.engine import ensemble as ensemble_lib, evaluation, rundir
from mnist_jax.errors import UserError
from mnist_jax.inspection.image import load_image, prepare_image

__all__ = ['load_data', 'make_config', 'create', 'fit', 'predict', 'evaluate', 'load',
           'ensemble', 'load_image', 'prepare_image']


def load_data(name: str = 'mnist', data_dir=None, *, val_size: int = 5000,
              train_limit: int = 0, download: bool = True) -> pipeline.Dataset:
  """Train/val/test splits. ``data_dir``: a folder with the four IDX files, or a
  TFDS data_dir. None: MNIST from the download cache (fetched on first use, no
  TensorFlow), another ``name`` from TFDS's default (the tfds extra)."""
  config = defaults.get_config().data
  has_idx = (name == 'mnist' if not data_dir else
             idx.existing(data_dir, idx.FILES['train'][0]) is not None)
  config.update(name=name, data_dir=data_dir, source='idx' if has_idx else 'tfds',
                val_size=val_size, train_limit=train_limit, download=download)
  return pipeline.load(config)


def make_config(model: str = None, config=None, **overrides) -> ml_collections.ConfigDict:
  """A full config: ``config`` (default: defaults.get_config()) with the model
  ``model`` and ``overrides``, each a top-level key (learning_rate, optimizer,
  loss, augment=dict(rotate=10), ...) or an attribute of the model (features,
  dropout_rate, activation, ...)."""
  config = defaults.get_config() if config is None else ml_collections.ConfigDict(config)
  if model is not None and model != config.model.name:
    config.model = ml_collections.ConfigDict({'name': model})
  fields = models.options(models.get_class(config.model.name))
  dotted = {}
  for key, value in overrides.items():
    in_top, in_model = key in config and key != 'model', key in fields
    if in_top and in_model:
      raise UserError(f"'{key}' is both a config key and a model attribute; set it in "
                      'a config and pass config=...')
    if in_top and isinstance(config[key], ml_collections.ConfigDict) and isinstance(value, dict):
      dotted.update({f'{key}.{k}': v for k, v in config_overrides.flat(value).items()})
    elif in_top:
      dotted[key] = value
    elif in_model:
      dotted[f'model.{key}'] = value
    else:
      raise UserError(f"unknown option '{key}': not a config key (see "
                      f"mnist_jax/config/defaults.py) nor an attribute of model "
                      f"'{config.model.name}' ({', '.join(fields)})")
  options = {f'model.{f}' for f in fields}
  return config_overrides.apply(config, dotted, kind='option',
                                may_add=lambda _, key: key in options)


def create(model: str = None, *, config=None, seed=None, num_train=None,
           num_classes=None, data=None, **overrides) -> train.TrainState:
  """A freshly initialized TrainState of ``make_config(model, config, **overrides)``
  (default model: lenet5; ``seed`` defaults to config.seed). ``data``, a Dataset:
  its classes K, its training split's μ, σ (for config.data.standardize) and its
  size N (for epoch-based learning-rate schedules), as a run records them
  (data/describe.py); else ``num_classes`` (default: the model's 10) and
  ``num_train``."""
  if data is not None and not isinstance(data, pipeline.Dataset):
    overrides['data'] = data          # data=dict(standardize=True): a config override
    data = None
  config = make_config(model, config, **overrides)
  if data is not None:
    config = describe.resolve(config, data)
  seed = config.seed if seed is None else seed
  return train.create_train_state(config, jax.random.key(seed), num_train=num_train,
                                   num_classes=num_classes)


@functools.partial(jax.jit, static_argnums=5)
def _step(state, images, labels, perm, i, batch_size, rng):
  batch_idx = jax.lax.dynamic_slice_in_dim(perm, i * batch_size, batch_size)
  return train.train_step(state, {'image': images[batch_idx], 'label': labels[batch_idx]},
                          rng)


def _split(data):
  """(images, labels) of the training split of a Dataset or an (x, y) pair."""
  if isinstance(data, pipeline.Dataset):
    return data.train_images, data.train_labels
  images, labels = data
  return images, labels


def _batch_size(state, batch_size):
  """``batch_size``, by default the one the state's learning-rate schedule was sized for."""
  sized_for = getattr(state.tx, 'batch_size', None)
  if batch_size is None:
    return sized_for or 128
  if sized_for and batch_size != sized_for and getattr(state.tx, 'schedule', '') != 'constant':
    raise UserError(f'batch_size {batch_size} differs from the {sized_for} the state\'s '
                    f"'{state.tx.schedule}' schedule was sized for; omit batch_size or "
                    f'create the state with batch_size={batch_size}')
  return batch_size


def fit(state, data, *, steps: int, batch_size=None, seed: int = 0) -> train.TrainState:
  """``state`` after ``steps`` train steps on ``data`` (a Dataset: its train
  split; or uint8 images (N, 28, 28[, 1]) and int labels as a pair). The
  batch size is the state's (config.batch_size) unless given; preprocessing
  and augmentation are the state's own."""
  images, labels = _split(data)
  images = np.asarray(images)
  images = images[..., None] if images.ndim == 3 else images
  if images.dtype != np.uint8 or len(images) != len(labels):
    raise UserError(f'fit needs uint8 images and one label per image, got '
                    f'{images.dtype} {images.shape} and {np.shape(labels)}; pass a Dataset '
                    'from api.load_data or (uint8 images, labels)')
  batch_size = _batch_size(state, batch_size)
  if not 0 < batch_size <= len(labels):
    raise UserError(f'batch_size {batch_size} must be in 1..{len(labels)} (the number '
                    'of training images); pass a smaller batch_size')
  per_epoch = len(labels) // batch_size
  sized_for = getattr(state.tx, 'steps_per_epoch', per_epoch)
  if getattr(state.tx, 'schedule', 'constant') != 'constant' and sized_for != per_epoch:
    raise UserError(f"the state's '{state.tx.schedule}' schedule is sized for {sized_for} "
                    f'steps per epoch, but {len(labels)} images in batches of {batch_size} '
                    f'give {per_epoch}; create the state with data= (or num_train='
                    f'{len(labels)})')
  perm_key, step_key = jax.random.split(jax.random.key(seed))
  images, labels = jnp.asarray(images), jnp.asarray(labels, jnp.int32)
  perms = {}
  start = int(state.step)
  for s in range(start, start + steps):
    epoch, i = divmod(s, per_epoch)
    if epoch not in perms:
      perms = {epoch: jax.random.permutation(jax.random.fold_in(perm_key, epoch),
                                             len(labels))}
    state, _ = _step(state, images, labels, perms[epoch], i, batch_size, step_key)
  return state


def predict(state, images, *, batch_size: int = 1000):
  """Probabilities softmax(f(x)) as numpy: (N, K) for images (N, 28, 28[, 1]),
  (K,) for one (28, 28) image; uint8 pixels 0..255, or floats already in
  [0, 1]. The state applies the preprocessing it was trained with."""
  x = np.asarray(images)
  single = x.ndim == 2
  x = x[None] if single else x
  probs = evaluation.predict(state, x, batch_size=batch_size)
  return probs[0] if single else probs


def evaluate(state, images, labels, *, batch_size: int = 1000) -> dict:
  """{'loss', 'accuracy', 'count'} of uint8 images (N, 28, 28[, 1]) and labels (N,)."""
  images = np.asarray(images)
  images = images[..., None] if images.ndim == 3 else images
  return evaluation.metrics(state, images, np.asarray(labels, np.int32),
                            batch_size=batch_size)


def load(workdir: str, which: str = 'best', *, weights: str = None):
  """(config, state) of a run written by ``python -m mnist_jax.main``
  (engine/rundir.py: load_trained); the state carries the run's preprocessing (its μ, σ) and
  its K classes, so ``predict``/``evaluate`` apply them; config.data records K,
  the class names and μ, σ. An ensemble run gives an ``Ensemble``. ``weights``:
  'raw' or 'ema' (the weight EMA, config.ema_decay > 0); default: the run's
  config.model_weights ('raw' where it has none)."""
  run = rundir.load_trained(workdir, which, weights=weights)
  return run.config, run.state


def ensemble(states) -> ensemble_lib.Ensemble:
  """An Ensemble of TrainStates of one model config (``predict``/``evaluate`` take
  it); UserError if their arrays differ in shape."""
  return ensemble_lib.stack(states)
