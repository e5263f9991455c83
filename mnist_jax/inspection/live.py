"""One trained run, loaded once, answering the serve page's questions
(inspection/server.py puts them on the web).

For the 28x28 digit d = prepare_image(picture) and x = d/255:
  probabilities    p = softmax(z), z = f(x) the logits            (``predict``)
  feature maps     FM_L = K_L ∗ a_{L−1} + b_L of every conv layer L, before
                   the activation, as ``figures.feature_maps`` draws them (inspection/layers.py)
  saliency         S = ∂z_k/∂x for the predicted class k = argmax p (one
                   jax.vjp of the forward pass that also gives the maps)
  receptive field  unit (i, j) of layer L sees the input rows
                   [a_L + i·j_L, a_L + i·j_L + RF_L) and the columns likewise;
                   RF_L, jump j_L and start a_L from inspection/explain.py
An ensemble run (config.ensemble.size = K > 1, engine/ensemble.py) predicts
p = (1/K) Σ_k p_k, the mean of its members' probabilities, and its answer adds
each member's p_k and their disagreement (``ensemble.disagreement``: spread =
std_k p_k(ŷ), dissent = the fraction of members whose argmax is not ŷ); its
feature maps, saliency and receptive fields are member 0's.
The forward passes are jitted functions of (state, image): they compile once per
model and stay compiled for every later drawing (``load`` warms them up).
Test-set views (confusion matrix, mistakes, a cell's digits) evaluate the run's
test split once, when first asked (``test_view``).
"""
import base64
import dataclasses
import threading
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from mnist_jax.engine import ensemble, evaluation, rundir
from mnist_jax.store import workdir as workdir_lib
from mnist_jax.inspection import confusion as confusion_lib, explain, layers as layers_lib
from mnist_jax.inspection.image import SIZE, preparation_steps, resize_area

MAX_MAPS = layers_lib.MAX_MAPS   # maps shown per conv layer
STEP_SIDE = 84                # longest side of a preprocessing-step thumbnail
MISTAKES = 24
CELL_DIGITS = 48


def b64(array: np.ndarray) -> str:
  """The bytes of an array, base64 (the page decodes them into typed arrays)."""
  return base64.b64encode(np.ascontiguousarray(array).tobytes()).decode('ascii')


def int8_maps(maps: np.ndarray) -> tuple:
  """(b64 int8 maps, scales): each map (last axis) divided by its own max |v|,
  times 127, so the page colours each on its own range (as figures does)."""
  scales = np.abs(maps).reshape(-1, maps.shape[-1]).max(0)
  safe = np.where(scales > 0, scales, 1.0)
  q = np.round(np.moveaxis(maps / safe, -1, 0) * 127).astype(np.int8)
  return b64(q), [float(s) for s in scales]


def _forward(state, x):
  """(logits, [conv outputs]) for model inputs built from x = d/255."""
  logits, _, outs = layers_lib.layer_outputs(state, state.inputs(x), ('conv',))
  return logits[0], [o[0] for o in outs]


@jax.jit
def _inside(state, x):
  """(p, conv outputs, ∂z_k/∂x with k = argmax p) for one x (1, 28, 28, 1)."""
  logits, vjp, outs = jax.vjp(lambda x: _forward(state, x), x, has_aux=True)
  k = jnp.argmax(logits)
  (saliency,) = vjp(jax.nn.one_hot(k, logits.shape[-1], dtype=logits.dtype))
  return jax.nn.softmax(logits), outs, saliency[0, ..., 0]


def conv_layers(state) -> list:
  """[{'name', 'shape', 'rf', 'jump', 'start'}] of each conv layer call, in the
  order ``_inside`` returns their maps (RF, jump and start per axis from the
  explainer; None where the explainer has no local field for it)."""
  names = []

  def trace(state, x):
    _, found, outs = layers_lib.layer_outputs(state, state.inputs(x), ('conv',))
    names.extend(found)
    return outs

  shapes = jax.eval_shape(trace, state, jnp.zeros((1, SIZE, SIZE, 1)))
  rows = {}
  for row in explain.explain(state.model, variables=state.variables):
    rows.setdefault(row.name, row)
  layers = []
  for (name, _), shape in zip(names, shapes):
    row = rows.get(name)
    local = row is not None and isinstance(row.rf, tuple)
    layers.append({'name': name, 'shape': list(shape.shape[1:]),
                   'rf': list(row.rf) if local else None,
                   'jump': list(row.jump) if local else None,
                   'start': list(row.start) if local else None})
  return layers


def _thumbnail(image: np.ndarray) -> dict:
  """{'width', 'height', 'pixels'} of a step image, at most STEP_SIDE px a side."""
  h, w = image.shape
  if max(h, w) > STEP_SIDE:
    scale = STEP_SIDE / max(h, w)
    image = resize_area(image, (max(1, round(h * scale)), max(1, round(w * scale))))
  pixels = np.clip(np.round(image), 0, 255).astype(np.uint8)
  return {'width': pixels.shape[1], 'height': pixels.shape[0], 'pixels': b64(pixels)}


@dataclasses.dataclass
class LiveRun:
  """A loaded run: its config, restored state (a TrainState, or an Ensemble) and
  the page's answers about it; ``inner`` is the model whose inside is shown (the
  state, or an ensemble's member 0)."""
  run_id: str
  workdir: str
  which: str
  config: Any
  state: Any
  meta: dict
  layers: list
  inner: Any = None
  label_names: tuple = ()      # the run's K class names
  digits: bool = True          # the run's inputs are MNIST-style digits
  _test: Optional[dict] = None
  _lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)

  def summary(self) -> dict:
    """What the page shows about the run: config, curves, conv layers."""
    return {'run': self.run_id, 'which': self.which, 'epoch': self.meta['epoch'],
            'model': self.config.model.name, 'config': self.config.to_dict(),
            'history': workdir_lib.load_history(self.workdir), 'layers': self.layers,
            'ensemble': self.members(), 'classes': list(self.label_names),
            'weights': self.meta.get('weights', 'raw')}

  def members(self) -> int:
    """K, the ensemble's members (1 for a single model)."""
    return self.state.size if isinstance(self.state, ensemble.Ensemble) else 1

  def predict(self, picture: np.ndarray, inside: bool = False) -> dict:
    """Probabilities (and with ``inside`` the maps and saliency) for a picture
    of one digit, any size, with its preprocessing steps; an ensemble's adds
    'members' (K, C) (their mean is 'probs'), 'spread' and 'dissent'."""
    steps = preparation_steps(picture, self.digits)
    digit = np.clip(np.round(steps[-1][1]), 0, 255).astype(np.uint8)
    out = {'steps': [dict(title=t, **_thumbnail(s)) for t, s in steps],
           'digit': b64(digit)}
    if self.members() > 1:   # the ensemble's p (the members' mean) and the members'
      members = evaluation.predict_members(self.state, digit[None])
      probs = ensemble.combine(members)[0]
      spread = ensemble.disagreement(members)
      out.update(members=[[float(p) for p in m[0]] for m in members],
                 spread=float(spread['spread'][0]), dissent=float(spread['dissent'][0]))
    elif not inside:
      probs = evaluation.predict(self.state, digit[None])[0]
    if inside:   # member 0's inside for an ensemble; a single model's p comes with it
      p_inner, maps, saliency = jax.device_get(
          _inside(self.inner, jnp.asarray(digit[None, ..., None] / 255.0, jnp.float32)))
      out['maps'] = []
      for layer, m in zip(self.layers, maps):
        data, scales = int8_maps(np.asarray(m, np.float32)[..., :MAX_MAPS])
        out['maps'].append({'name': layer['name'], 'data': data, 'scales': scales})
      sal, scale = int8_maps(np.asarray(saliency, np.float32)[..., None])
      out['saliency'] = {'data': sal, 'scale': scale[0]}
      if self.members() == 1:
        probs = p_inner
    probs = np.asarray(probs, np.float64)
    out['probs'] = [float(p) for p in probs]
    out['digit_class'] = int(np.argmax(probs))
    return out

  def test_view(self) -> dict:
    """The run's test split evaluated once: labels, predictions, p(ŷ), images."""
    with self._lock:
      if self._test is None:
        data = rundir.load_data(self.config)
        probs = evaluation.predict(self.state, data.test_images,
                                         batch_size=self.config.eval_batch_size)
        self._test = {'images': data.test_images[..., 0], 'labels': data.test_labels,
                      'probs': probs, 'preds': probs.argmax(-1)}
      return self._test

  def confusion(self) -> dict:
    """The test confusion matrix C[i, j] and the most confident mistakes."""
    t = self.test_view()
    matrix = confusion_lib.confusion_matrix(t['labels'], t['preds'], t['probs'].shape[-1])
    wrong = confusion_lib.mistakes(t['labels'], t['probs'], MISTAKES)
    return {'matrix': matrix.tolist(), 'count': int(matrix.sum()),
            'accuracy': float(np.trace(matrix) / max(1, matrix.sum())),
            'mistakes': self._digits(wrong)}

  def cell(self, true: int, pred: int) -> dict:
    """The test digits of class ``true`` predicted as ``pred`` (the first 48)."""
    t = self.test_view()
    hits = np.flatnonzero((t['labels'] == true) & (t['preds'] == pred))
    return {'true': true, 'pred': pred, 'count': int(len(hits)),
            'digits': self._digits(hits[:CELL_DIGITS])}

  def _digits(self, indices) -> list:
    t = self.test_view()
    return [{'index': int(i), 'label': int(t['labels'][i]), 'pred': int(t['preds'][i]),
             'p': float(t['probs'][i, t['preds'][i]]), 'pixels': b64(t['images'][i])}
            for i in indices]


def load(run_id: str, workdir: str, which: str = 'best') -> LiveRun:
  """The ``which`` checkpoint of ``workdir`` (rundir.load_trained: its chosen weights,
  classes and image preparation), its compiled functions warmed up."""
  t = rundir.load_trained(workdir, which)
  state = t.state
  inner = state.member(0) if isinstance(state, ensemble.Ensemble) else state
  run = LiveRun(run_id, workdir, which, t.config, state, t.meta, conv_layers(inner), inner,
                label_names=t.label_names, digits=t.digits)
  blank = np.zeros((SIZE, SIZE), np.uint8)
  blank[8:20, 13:15] = 255
  run.predict(blank, inside=True)   # compiles the forward passes now, not on the first stroke
  run.predict(blank)
  return run
