"""Model registry: a config names a model by string, ``build`` makes the module.

Every model is a flax.linen Module with the same contract::

    logits = model.apply(variables, x, train=False)   # x: (N, 28, 28, 1) float
    # -> (N, num_classes) float32 logits; train=True enables dropout/BN updates

Models with batch norm take ``axis_name`` (cross-device statistics under pmap);
``train.train_step`` sets it. Conv models take their convolution and max-pool as
fields, ``conv`` (default nn.Conv) and ``max_pool`` (default nn.max_pool), which
``build`` fills with ``layers_for(config.model.conv_impl, platform)``. Models whose
``__call__`` takes ``dropout_rate`` accept p per call, an array included
(``takes_dropout_rate``). Entries are import paths so that building one model never
imports the others.
"""
import dataclasses
import importlib
import inspect

import jax
from flax import linen as nn

from mnist_jax.errors import UserError
from mnist_jax.nn import fast_layers

REGISTRY = {
    'perceptron': 'mnist_jax.models.perceptron:Perceptron',
    'mlp': 'mnist_jax.models.mlp:MLP',
    'cnn': 'mnist_jax.models.cnn:CNN',
    'lenet5': 'mnist_jax.models.lenet:LeNet5',
    'alexnet': 'mnist_jax.models.alexnet:AlexNet',
    'vgg': 'mnist_jax.models.vgg:VGG',
    'googlenet': 'mnist_jax.models.googlenet:GoogLeNet',
    'resnet': 'mnist_jax.models.resnet:ResNet',
    'densenet': 'mnist_jax.models.densenet:DenseNet',
    'efficientnet': 'mnist_jax.models.efficientnet:EfficientNet',
    'speednet': 'mnist_jax.models.speednet:SpeedNet',
}
CONV_IMPLS = {'xla': nn.Conv, 'patches': fast_layers.PatchConv,
              'shift': fast_layers.ShiftConv}
LAYER_FIELDS = ('conv', 'max_pool')   # set from config.model.conv_impl by layers_for


def names():
  """The registered model names whose module exists in this install."""
  return [n for n in REGISTRY if _exists(n)]


def _exists(name):
  module = REGISTRY[name].split(':')[0]
  return importlib.util.find_spec(module) is not None


def get_class(name: str) -> type:
  """The Module class registered under ``name``."""
  if name not in REGISTRY or not _exists(name):
    raise UserError(f"unknown model '{name}'; set config.model.name to one of "
                    f"{', '.join(names())}")
  module, cls = REGISTRY[name].split(':')
  return getattr(importlib.import_module(module), cls)


def fields(cls) -> list:
  """The attributes of a Module class (its dataclass fields)."""
  return [f.name for f in dataclasses.fields(cls)
          if f.init and f.name not in ('parent', 'name')]


def options(cls) -> list:
  """The config.model options of a Module class: its fields, with ``conv_impl``
  (which ``layers_for`` reads) in place of the layer fields."""
  names = fields(cls)
  if 'conv' not in names:
    return names
  return [f for f in names if f not in LAYER_FIELDS] + ['conv_impl']


def takes_dropout_rate(cls) -> bool:
  """Whether the model's ``__call__`` takes ``dropout_rate`` (p for that call, a
  number or an array, in place of the field): K trials under vmap with their own p_k."""
  return 'dropout_rate' in inspect.signature(cls.__call__).parameters


def layers_for(conv_impl: str, backend: str) -> dict:
  """{'conv': the convolution Module class, 'max_pool': the max-pool function} for
  config.model.conv_impl and the platform ``backend`` (jax.default_backend()).

  conv_impl  'xla': nn.Conv; 'patches': fast_layers.PatchConv; 'shift':
             fast_layers.ShiftConv (stride 1 only); 'auto': PatchConv on CPU,
             nn.Conv elsewhere (cuDNN, the TPU's convolution units).
  max_pool   fast_layers.max_pool on CPU, nn.max_pool elsewhere, whatever the conv.

  Why 'auto' picks patches on CPU: inside ``lax.scan`` (how the trainer runs an
  epoch) XLA:CPU's convolutions run slower than in a standalone jit, patches + matmul
  do not (docs/speed.md, ``experiments/speed/conv_in_scan.py``). All of them take
  the same parameters, so a checkpoint moves between platforms and settings.
  """
  if conv_impl == 'auto':
    conv_impl = 'patches' if backend == 'cpu' else 'xla'
  if conv_impl not in CONV_IMPLS:
    raise UserError(f"unknown conv_impl '{conv_impl}'; set config.model.conv_impl to "
                    "'auto', 'xla', 'patches' or 'shift'")
  return {'conv': CONV_IMPLS[conv_impl],
          'max_pool': fast_layers.max_pool if backend == 'cpu' else nn.max_pool}


def _layers_taken(cls, conv_impl: str, backend: str) -> dict:
  """The entries of ``layers_for(conv_impl, backend)`` that ``cls`` has as fields."""
  return {k: v for k, v in layers_for(conv_impl, backend).items() if k in fields(cls)}


def with_layers(model: nn.Module, conv_impl: str, backend: str) -> nn.Module:
  """``model`` (same parameters) with the layers of ``layers_for(conv_impl, backend)``."""
  return model.clone(**_layers_taken(type(model), conv_impl, backend))


def vmapped(model: nn.Module) -> nn.Module:
  """``model`` (same parameters) as K models under ``jax.vmap`` run it best: its
  convolutions as patches + matmul on every platform. vmap turns those into batched
  matrix products, while a vmapped nn.Conv whose input and kernel both carry the
  model axis becomes a grouped convolution (slower than K separate models on XLA:CPU)."""
  return with_layers(model, 'patches', jax.default_backend())


def build(model_config, **overrides) -> nn.Module:
  """Builds a module from ``config.model`` (``name`` + that model's options); a
  conv model gets the layers of ``layers_for(conv_impl, jax.default_backend())``."""
  kwargs = dict(model_config)
  name = kwargs.pop('name')
  cls = get_class(name)
  kwargs.update(overrides)
  allowed = options(cls)
  unknown = sorted(set(kwargs) - set(allowed))
  if unknown:
    raise UserError(
        f"model '{name}' has no option {', '.join(unknown)}; remove it from "
        f"config.model (options: {', '.join(allowed)})")
  if 'conv_impl' in allowed:
    kwargs.update(_layers_taken(cls, kwargs.pop('conv_impl', 'auto'), jax.default_backend()))
  return cls(**kwargs)
