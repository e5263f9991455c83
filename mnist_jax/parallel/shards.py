"""Per-device shards of the training set (``config.data.per_device_shards``).

With D devices in the mesh, N training images and batch B, device d keeps
only rows [d·M, (d+1)·M) with M = ⌊N / D⌋ (up to D − 1 images are dropped),
and every step it draws its b = B / D examples from its own rows:

  π_d = permutation of 0..M−1 from fold_in(key, d)     (one per device and epoch)
  batch t on device d = rows d·M + π_d[t·b : (t+1)·b],  t = 0 .. ⌊M / b⌋ − 1

so each device reads only local memory, and in a multi-host run each process
holds only the rows of its own devices (1/P of the training set). The batches
depend on D (device d never sees another device's rows), so a run is
reproduced by the same device count however the devices are split into
processes: 2 processes x 4 devices == 1 process x 8 devices (tests/parallel/test_multihost.py).
Multi-host runs always shard; a single process shards when the config asks.
"""
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from mnist_jax import parallel


def rows_per_device(num_train: int, mesh: Mesh) -> int:
  """M = ⌊N / D⌋."""
  return num_train // mesh.devices.size


def _mine(mesh: Mesh) -> list:
  """Mesh positions of this process's devices."""
  return [i for i, d in enumerate(mesh.devices.flat) if d.process_index == jax.process_index()]


def local_rows(images, labels, mesh: Mesh):
  """(images, labels, M): the rows of this process's devices, in mesh order;
  the other processes' rows can be dropped right after reading."""
  m = rows_per_device(len(labels), mesh)
  keep = np.concatenate([np.arange(i * m, (i + 1) * m) for i in _mine(mesh)])
  return images[keep], labels[keep], m


def place(images, labels, m: int, mesh: Mesh):
  """Global arrays of D·M rows sharded on their first axis, built from this
  process's rows (``local_rows``): block j goes to its j-th device."""
  sharding = NamedSharding(mesh, P(parallel.AXIS))
  devices = [mesh.devices.flat[i] for i in _mine(mesh)]

  def build(a):
    blocks = [jax.device_put(a[j * m:(j + 1) * m], d) for j, d in enumerate(devices)]
    return jax.make_array_from_single_device_arrays(
        (m * mesh.devices.size,) + a.shape[1:], sharding, blocks)

  return build(images), build(labels)


def permutation_fn(num_train: int, batch_size: int, mesh: Mesh):
  """jit(key -> (steps, B) row indices): column block d holds device d's
  global row numbers d·M + π_d[...]."""
  d = mesh.devices.size
  m, b = rows_per_device(num_train, mesh), batch_size // d
  steps = m // b

  @jax.jit
  def permute(key):
    perms = jax.vmap(lambda i: jax.random.permutation(jax.random.fold_in(key, i), m))(
        jnp.arange(d))                                       # (D, M) local rows
    idx = perms[:, :steps * b].reshape(d, steps, b) + (jnp.arange(d) * m)[:, None, None]
    return idx.transpose(1, 0, 2).reshape(steps, d * b)

  return permute


def gather_fn(mesh: Mesh):
  """(images, labels, idx) -> the batch, each device gathering from its own
  rows only (shard_map: no cross-device traffic)."""
  spec = P(parallel.AXIS)

  def local(images, labels, idx):
    base = jax.lax.axis_index(parallel.AXIS) * images.shape[0]
    return images[idx - base], labels[idx - base]

  return jax.shard_map(local, mesh=mesh, in_specs=(spec, spec, spec),
                       out_specs=(spec, spec))
