"""Model registry: a config names a model by string, ``build`` makes the module.

Every model is a flax.linen Module with the same contract::

    logits = model.apply(variables, x, train=False)   # x: (N, 28, 28, 1) float
    # -> (N, num_classes) float32 logits; train=True enables dropout/BN updates

Models with batch norm take ``axis_name`` (cross-device statistics under pmap);
``train.train_step`` sets it. Entries are import paths so that building one
model never imports the others.
"""
import dataclasses
import importlib

from flax import linen as nn

from mnist_jax.errors import UserError

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
  """The configurable attributes of a Module class (its dataclass fields)."""
  return [f.name for f in dataclasses.fields(cls)
          if f.init and f.name not in ('parent', 'name')]


def build(model_config, **overrides) -> nn.Module:
  """Builds a module from ``config.model`` (``name`` + that model's attributes)."""
  kwargs = dict(model_config)
  name = kwargs.pop('name')
  cls = get_class(name)
  kwargs.update(overrides)
  allowed = fields(cls)
  unknown = sorted(set(kwargs) - set(allowed))
  if unknown:
    raise UserError(
        f"model '{name}' has no option {', '.join(unknown)}; remove it from "
        f"config.model (options: {', '.join(allowed)})")
  return cls(**kwargs)
