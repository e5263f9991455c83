"""Data parallelism over the local devices with jit + sharding.

A 1-D device mesh with axis 'batch'. The state is replicated on every device;
each global batch of B examples is split into D shards of B/D. Written as one
global computation under jit, XLA's SPMD partitioner inserts the all-reduce of
the gradients (and of the batch-norm statistics), so the result equals the
single-device step on the whole batch. ``train.train_step(axis_name=...)`` is
the per-device form of the same thing, for jax.shard_map (and jax.pmap).
"""
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from mnist_jax.errors import UserError

AXIS = 'batch'


def make_mesh(num_devices: int = 0) -> Mesh:
  """A mesh over the first ``num_devices`` local devices (0 = all); in a
  multi-host run (distributed.py) over every process's devices."""
  devices = jax.local_devices()
  if jax.process_count() > 1:
    if num_devices:
      raise UserError(f'num_devices={num_devices} is not supported with '
                      f'{jax.process_count()} processes; set config.num_devices=0')
    devices = jax.devices()
  if num_devices > len(devices):
    raise UserError(f'num_devices={num_devices} but only {len(devices)} local devices '
                    'exist; set config.num_devices=0 to use all of them')
  devices = devices[:num_devices or len(devices)]
  return Mesh(np.array(devices), (AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over the devices."""
  return NamedSharding(mesh, P(AXIS))


def replicate(tree, mesh: Mesh):
  """Puts every array of ``tree`` on every device of ``mesh``."""
  return jax.device_put(tree, replicated(mesh))
