"""Layer capture: every layer's output in one forward pass of a trained model.

Layer outputs are grabbed with flax's ``nn.intercept_methods``: every call of a
module owning a 4-D 'kernel' (K, K, C, F) is a conv layer (nn.Conv or a custom
one), a 2-D (in, out) kernel a dense layer, in call order, so any registered
model works; models without convolutions (mlp, perceptron) have no conv layers.
The figures (inspection/figures.py) and the serve page (inspection/live.py)
both read a model's inside through this module; it draws nothing.
"""
import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

MAX_MAPS = 16   # output maps shown per conv layer (figures and the page)


def _kernel(module):
  """The module's own 'kernel' parameter (None for containers and kernel-less layers)."""
  params = module.variables.get('params', {})
  kernel = params.get('kernel') if hasattr(params, 'get') else None
  return None if kernel is None or hasattr(kernel, 'keys') else kernel


def layer_outputs(state, x, kinds=('conv', 'dense')):
  """(logits, [(name, kind)], [output]) of one forward pass on model inputs ``x``
  (already preprocessed); traceable, so it can run under jit or grad. A layer is
  a module with its own 'kernel' parameter: 4-D (K, K, C, F) = 'conv' (nn.Conv,
  depthwise or im2col variants alike), 2-D (in, out) = 'dense'."""
  names, outs = [], []

  def interceptor(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    kernel = _kernel(context.module) if context.method_name == '__call__' else None
    kind = {4: 'conv', 2: 'dense'}.get(getattr(kernel, 'ndim', 0))
    if kind in kinds:
      names.append(('/'.join(context.module.path), kind))
      outs.append(out)
    return out

  with nn.intercept_methods(interceptor):
    logits = state.model.apply(state.variables, x, train=False)
  return logits, names, outs


def _recording(kinds, found: list):
  """``layer_outputs``' outputs as a function of (state, x), appending the layers'
  (name, kind) to ``found`` when it is traced."""
  def run(state, x):
    _, names, outs = layer_outputs(state, x, kinds)
    found.extend(names)
    return outs
  return run


def capture_layers(state, images, kinds=('conv', 'dense')):
  """[(name, kind, output)] of every layer call, in call order (jitted; see
  ``layer_outputs``). ``images``: uint8 pixels or floats in [0, 1], fed through
  the state's own preprocessing."""
  names = []
  outs = jax.jit(_recording(kinds, names))(state, state.inputs(jnp.asarray(images)))
  return [(name, kind, np.asarray(o, np.float32)) for (name, kind), o in zip(names, outs)]


def layer_names(state, kinds=('conv', 'dense')):
  """[(name, kind)] of every layer call, in call order, as ``capture_layers`` finds
  them; traced only (jax.eval_shape): nothing is compiled or run."""
  names = []
  run = _recording(kinds, names)
  jax.eval_shape(lambda state, images: run(state, state.inputs(images)), state,
                 jax.ShapeDtypeStruct((1, 28, 28, 1), jnp.uint8))
  return names


def layer_params(state, name):
  """The 'kernel' of the layer at path ``name`` ('/'-joined) as float32 numpy."""
  params = state.params
  for part in name.split('/'):
    params = params[part]
  return np.asarray(params['kernel'], np.float32)
