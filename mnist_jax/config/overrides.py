"""The one override applier: dotted keys -> values written into a copy of a config.

  apply(config, {'learning_rate': 3e-3, 'model.features': [4, 8]})

Every place that changes a config from outside goes through it: a sweep trial
(search/hyper.apply), the notebook API (api.make_config) and a saved run's
config.json read back over today's defaults (engine/rundir.config_from_json).
So the rules are the same everywhere:

  - lists become tuples, recursively (JSON has no tuples; the models take them);
  - strict (the default): a key the config does not have is a UserError unless
    ``may_add(config, key)`` allows it (callers pass the model's options:
    the config layer sits beside models/ and does not import them); a value
    of another type than the key's is a UserError;
  - lenient (``lenient=True``, for saved runs): unknown keys are added and a
    value of another type replaces the old one, so an older run still loads.

``kind`` names the keys in messages ('sweep key', 'option', 'override').
"""
import ml_collections

from mnist_jax.errors import UserError


def tuples(value):
  """Lists -> tuples, recursively through dicts and sequences."""
  if isinstance(value, dict):
    return {k: tuples(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return tuple(tuples(v) for v in value)
  return value


def flat(tree: dict, prefix: str = '') -> dict:
  """A nested dict (e.g. ``config.to_dict()``) as {dotted key: leaf value}."""
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      out.update(flat(value, f'{prefix}{key}.'))
    else:
      out[prefix + key] = value
  return out


def _unknown(key: str, kind: str) -> UserError:
  return UserError(f"unknown {kind} 'config.{key}'; use keys of the config (see "
                   'mnist_jax/config/defaults.py or the model\'s fields), e.g. '
                   'config.learning_rate')


def _child(node, key: str, lenient: bool):
  """The sub-config ``node[key]`` (made, in lenient mode, where it is missing)."""
  child = node.get(key) if hasattr(node, 'get') else None
  if isinstance(child, ml_collections.ConfigDict) or not lenient:
    return child
  with node.unlocked():
    if key in node:
      del node[key]
    node[key] = ml_collections.ConfigDict()
  return node[key]


def _set(node, leaf: str, value, key: str, kind: str, lenient: bool) -> None:
  try:
    node[leaf] = value
  except (TypeError, ValueError) as e:
    if not lenient:
      raise UserError(f"value {value!r} does not fit 'config.{key}' ({e}); give "
                      f'values of the type of its default {node[leaf]!r}') from None
    with node.unlocked():   # a saved run stored another type (e.g. None -> str)
      del node[leaf]
      node[leaf] = value


def apply(config, overrides: dict, *, lenient: bool = False, kind: str = 'override',
          may_add=None):
  """A copy of ``config`` with the dotted-key ``overrides`` written in (rules above)."""
  config = config.copy_and_resolve_references()
  for key, value in overrides.items():
    *parents, leaf = key.split('.')
    node = config
    for p in parents:
      node = _child(node, p, lenient) if hasattr(node, 'keys') else None
    if not hasattr(node, 'keys'):
      raise _unknown(key, kind)
    value = tuples(value)
    if leaf not in node:
      if not (lenient or (may_add is not None and may_add(config, key))):
        raise _unknown(key, kind)
      with node.unlocked():
        node[leaf] = ml_collections.ConfigDict(value) if isinstance(value, dict) else value
      continue
    _set(node, leaf, value, key, kind, lenient)
  return config
