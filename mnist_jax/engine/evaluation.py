"""The one evaluation pass: every metric of a split from one compiled program.

For each of the K models of a group (K = 1: a run; an ensemble's M members) on
a split of N examples, one batched, mesh-sharded function computes the logits
z = f(x; w_k) and from them, with q = train.probabilities(z) (softmax, or the
normalised σ of a bce model) and c_i = max_y q_iy:

  loss      = (1/N) Σ_i ℓ(z_i, onehot(y_i))              the run's config.loss
  accuracy  = (1/N) Σ_i 1[argmax_y q_iy = y_i]
  nll       = −(1/N) Σ_i log q_{i, y_i}                    (q clipped at 1e-12)
  ece       = Σ_b |Σ_{i∈b} 1[ŷ_i = y_i] − Σ_{i∈b} c_i| / N  (engine/calibration.py's
              Σ_b (n_b/N)|acc_b − conf_b|, from the bin sums)

and for runs of M > 1 members the same accuracy, NLL and ECE of their mean
p = (1/M) Σ_k q_k; an ensemble's ``loss`` is the members' mean ℓ, as its
train_loss is. The raw and the EMA weights (where the state has an EMA) are
evaluated in the same program. The split is padded to a multiple of the batch
size with mask 0 on the padding (every example counts once) and cut into
batches on the host once; the per-batch sums are fetched once and added in
order. One jit (``pass_fn``, cached per mesh and layout) serves every split,
call and state of one architecture: one compilation per run, and XLA:CPU's
convolutions run outside a while loop.

``predict`` and ``predict_members`` are the prediction path (numpy class
distributions q of images for predict, serve and plots), not a second metric
path. The vocabulary: ``train.probabilities(logits)`` is q of logits;
``predict(state, images)`` is q of images, one batch (``train.predict``) or many.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np

from mnist_jax import parallel, train
from mnist_jax.data import preprocess
from mnist_jax.engine import calibration as calibration_lib, ensemble
from mnist_jax.errors import UserError
from mnist_jax.nn import losses

WEIGHTS = ('raw', 'ema')   # the trained weights, the weight EMA
_FLOOR = 1e-12


def padded_split(images, labels, batch_size, mesh) -> list:
  """[(images, labels, mask) of each batch of ``batch_size``] on the devices: the
  split padded to a multiple of batch_size, mask 0 on the padding."""
  n = len(labels)
  pad = -n % batch_size
  mask = np.concatenate([np.ones(n, np.float32), np.zeros(pad, np.float32)])
  images = np.concatenate([images, np.zeros((pad,) + images.shape[1:], images.dtype)])
  labels = np.concatenate([labels, np.zeros(pad, labels.dtype)])
  return parallel.replicate([(images[i:i + batch_size], labels[i:i + batch_size],
                              mask[i:i + batch_size]) for i in range(0, n + pad, batch_size)],
                            mesh)


def _distribution_sums(q, labels, mask) -> dict:
  """Sums over the batch axis of q (..., B, C): correct, NLL and the ECE bin sums."""
  conf = jnp.max(q, -1)
  right = (jnp.argmax(q, -1) == labels).astype(jnp.float32) * mask
  picked = jnp.take_along_axis(q, jnp.broadcast_to(labels[:, None], q.shape[:-1] + (1,)),
                               -1)[..., 0]
  which = jnp.clip(jnp.ceil(conf * calibration_lib.BINS).astype(jnp.int32) - 1, 0,
                   calibration_lib.BINS - 1)                  # ((b-1)/B, b/B]
  bins = jax.nn.one_hot(which, calibration_lib.BINS) * mask[:, None]
  return {'correct': jnp.sum(right, -1),
          'nll': jnp.sum(-jnp.log(jnp.maximum(picked, _FLOOR)) * mask, -1),
          'bin_correct': jnp.sum(bins * right[..., None], -2),
          'bin_conf': jnp.sum(bins * conf[..., None], -2)}


def logits(state, images, *, stacked: bool = False):
  """f(x; w): (B, C) of one model, or (K, B, C) of K models stacked on axis 0
  (train.stacked_axes) under vmap."""
  def one(s):
    return s.apply_fn(s.variables, s.inputs(images), train=False)

  return jax.vmap(one, in_axes=(train.stacked_axes(state),))(state) if stacked else one(state)


def batch_sums(state, batch, *, stacked: bool = False, members: int = 1) -> dict:
  """One batch's sums {'count', 'model': {weights: {'loss', 'correct', 'nll',
  'bin_correct', 'bin_conf'}}}, each of shape () or (K,) with ``stacked``; for
  runs of ``members`` > 1 models also 'ensemble': the same of their mean
  distribution, shape (K/M,)."""
  labels, mask = batch['label'], batch['mask']
  out = {'count': jnp.sum(mask), 'model': {}}
  weights = [('raw', state)] + ([('ema', train.ema_state(state))] if state.ema else [])
  for name, s in weights:
    z = logits(s, batch['image'], stacked=stacked)                   # ([K,] B, C)
    loss = losses.get(s.loss_name)(z, preprocess.one_hot(labels, z.shape[-1]))
    q = train.probabilities(z, s.loss_name)
    out['model'][name] = {'loss': jnp.sum(loss * mask, -1), **_distribution_sums(q, labels, mask)}
    if members > 1:
      mean = jnp.mean(q.reshape((-1, members) + q.shape[1:]), axis=1)  # (R, B, C)
      out.setdefault('ensemble', {})[name] = _distribution_sums(mean, labels, mask)
  return out


def pass_fn(mesh, *, stacked: bool = False, members: int = 1, compiler_options=None):
  """jit(batch_sums) on one padded batch (of ``padded_split``), sharded over ``mesh``:
  (state, images, labels, mask) -> sums, compiled with ``compiler_options``
  (train.compiler_options). One function per (mesh, layout, options), so repeated
  calls reuse its compilation."""
  return _pass_fn(mesh, stacked, members, tuple(sorted((compiler_options or {}).items())))


@functools.lru_cache(maxsize=None)
def _pass_fn(mesh, stacked: bool, members: int, options: tuple):
  sharding = parallel.batch_sharded(mesh)

  def evaluation_pass(state, images, labels, mask):
    batch = jax.lax.with_sharding_constraint(
        {'image': images, 'label': labels, 'mask': mask}, sharding)
    return batch_sums(state, batch, stacked=stacked, members=members)

  return jax.jit(evaluation_pass, compiler_options=dict(options) or None)


def _means(sums, count) -> dict:
  """{'accuracy', 'nll', 'ece'[, 'loss']} from one weights' sums."""
  out = {'accuracy': sums['correct'] / count, 'nll': sums['nll'] / count,
         'ece': np.abs(sums['bin_correct'] - sums['bin_conf']).sum(-1) / count}
  if 'loss' in sums:
    out['loss'] = sums['loss'] / count
  return out


def evaluate(fn, state, splits: dict) -> dict:
  """{split: {'model': {weights: {metric: value}}[, 'ensemble': ...]}}: the means of
  ``fn`` (a ``pass_fn``) over each ``padded_split`` of ``splits``, numpy arrays of
  shape () or (K,) (an ensemble's 'loss' is its members' mean loss)."""
  out = {}
  for name, split in splits.items():
    parts = jax.device_get([fn(state, *batch) for batch in split])
    sums = jax.tree_util.tree_map(lambda *v: functools.reduce(np.add, v), *parts)
    count = float(sums.pop('count'))
    out[name] = {part: {w: _means(s, count) for w, s in tree.items()}
                 for part, tree in sums.items()}
    for w, ens in out[name].get('ensemble', {}).items():
      runs = len(ens['accuracy'])
      ens['loss'] = out[name]['model'][w]['loss'].reshape(runs, -1).mean(1)
  return out


def split_metrics(state, images, labels, batch_size: int = 1000, *,
                  compiler_options=None) -> dict:
  """{weights: {'loss', 'accuracy', 'nll', 'ece', 'count'[, 'member_accuracy']}} of
  one TrainState or Ensemble on ``images`` (uint8 pixels or floats in [0, 1]) and
  ``labels``, over all local devices, from one pass compiled with
  ``compiler_options`` (a run's train.compiler_options: the kernels it was
  evaluated with)."""
  images, n = _checked(images), len(labels)
  is_ens = isinstance(state, ensemble.Ensemble)
  model_state = state.stacked_state() if is_ens else state
  if n == 0:
    nan = dict.fromkeys(('loss', 'accuracy', 'nll', 'ece'), float('nan'))
    return {w: {**nan, 'count': 0} for w in WEIGHTS[:1 + bool(model_state.ema)]}
  mesh = parallel.make_mesh()
  size = min(batch_size, n)
  size += -size % mesh.devices.size
  split = padded_split(np.asarray(images), np.asarray(labels, np.int32), size, mesh)
  fn = pass_fn(mesh, stacked=is_ens, members=state.size if is_ens else 1,
               compiler_options=compiler_options)
  tree = evaluate(fn, parallel.replicate(model_state, mesh), {'split': split})['split']
  out = {}
  for w, m in tree['ensemble' if is_ens else 'model'].items():
    out[w] = {**{k: float(np.ravel(v)[0]) for k, v in m.items()}, 'count': n}
    if is_ens:
      out[w]['member_accuracy'] = [float(a) for a in tree['model'][w]['accuracy']]
  return out


def _checked(images):
  """uint8 (N, 28, 28, 1) pixels or floats in [0, 1]; UserError otherwise."""
  images = np.asarray(images)
  if images.ndim == 3:
    images = images[..., None]
  floats = np.issubdtype(images.dtype, np.floating)
  if not (images.dtype == np.uint8 or floats) or (
      floats and images.size and not 0 <= images.min() <= images.max() <= 1):
    raise UserError(f'images must be uint8 pixels 0..255 or floats in [0, 1], got '
                    f'{images.dtype} in [{images.min()}, {images.max()}]; pass e.g. '
                    'data.test_images or prepare_image(...) outputs')
  return images


def metrics(state, images, labels, *, batch_size: int = 1000) -> dict:
  """{'loss', 'accuracy', 'nll', 'ece', 'count'} of one state or an Ensemble (then
  'loss' is its members' mean loss, 'nll' the NLL of their mean, and
  'member_accuracy' one per member) on ``images`` (N, 28, 28, 1) and ``labels``."""
  return split_metrics(state, images, labels, batch_size)['raw']




@functools.partial(jax.jit, static_argnames='stacked')
def _distributions(state, images, stacked: bool):
  """(M, B, C): q(f(x)) of each model (M = 1 for one model) on one batch."""
  q = train.probabilities(logits(state, images, stacked=stacked), state.loss_name)
  return q if stacked else q[None]


def predict(state, images, *, batch_size: int = 1000) -> np.ndarray:
  """q(f(x)) (N, C) float32 (train.probabilities) for images (N, 28, 28[, 1]): uint8
  pixels 0..255 or floats x in [0, 1]; in padded batches (one compilation),
  preprocessed as the state was trained. An Ensemble gives the mean of its
  members' distributions (ensemble.combine)."""
  return ensemble.combine(predict_members(state, images, batch_size=batch_size))


def predict_members(state, images, *, batch_size: int = 1000) -> np.ndarray:
  """(M, N, C): each member's class distribution (M = 1 for a single model), the
  members of an Ensemble under vmap, in the batches of ``padded_split``."""
  images = _checked(images)
  stacked = isinstance(state, ensemble.Ensemble)
  model_state = state.stacked_state() if stacked else state
  mesh, n = parallel.make_mesh(1), len(images)
  if n == 0:   # no images: (M, 0, C), C from the model
    one = np.zeros((1,) + images.shape[1:], images.dtype)
    shape = jax.eval_shape(functools.partial(_distributions, stacked=stacked), model_state,
                           one).shape
    return np.zeros((shape[0], 0, shape[-1]), np.float32)
  split = padded_split(images, np.zeros(n, np.int32), min(batch_size, n), mesh)
  model_state = parallel.replicate(model_state, mesh)
  return np.concatenate([np.asarray(_distributions(model_state, x, stacked))
                         for x, _, _ in split], axis=1)[:, :n]


def ema_weights(state):
  """A model's or an Ensemble's EMA weights in place of the raw ones."""
  if isinstance(state, ensemble.Ensemble):
    return state.with_ema()
  return train.ema_state(state)
