"""Multi-host start-up: join P processes into one JAX runtime (``jax.distributed``).

With P processes of D local devices each, ``jax.devices()`` lists all P·D
devices; the training mesh spans them and one global batch of B examples is
split B/(P·D) per device, so the update equals the single-process one on the
same B examples (gradients are all-reduced across hosts by XLA's collectives;
on CPU these are gloo's TCP collectives). Each process keeps only its devices'
rows of the training set (parallel/shards.py). Every process runs the same program;
only process 0 writes metrics, summaries and the results table (orbax
coordinates the checkpoint writes itself).

Settings, first found wins: flags ``--coordinator_address=HOST:PORT
--num_processes=P --process_id=i``; the environment variables
JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID; or a SLURM /
Open MPI job with more than one task, whose settings JAX detects itself.
Nothing set = one process, nothing to do.

  # process i of 2 (run both):
  python -m mnist_jax.main --config=configs/lenet.py --workdir=/shared/run \
      --coordinator_address=10.0.0.1:1234 --num_processes=2 --process_id=i
"""
import os
from typing import Optional

import jax

from mnist_jax.errors import UserError

CLUSTER_TASK_VARS = ('SLURM_NTASKS', 'OMPI_COMM_WORLD_SIZE')


def settings(coordinator_address: Optional[str] = None,
             num_processes: Optional[int] = None, process_id: Optional[int] = None,
             environ=None) -> Optional[dict]:
  """The ``jax.distributed.initialize`` arguments, {} to let JAX detect a
  SLURM/MPI cluster, or None for a single-process run."""
  env = os.environ if environ is None else environ

  def pick(value, var):
    if value is not None:
      return value
    raw = env.get(var)
    if raw in (None, ''):
      return None
    if var == 'JAX_COORDINATOR_ADDRESS':
      return raw
    try:
      return int(raw)
    except ValueError:
      raise UserError(f'{var}={raw!r} is not an integer; set it to a whole number') from None

  address = pick(coordinator_address, 'JAX_COORDINATOR_ADDRESS')
  count = pick(num_processes, 'JAX_NUM_PROCESSES')
  index = pick(process_id, 'JAX_PROCESS_ID')
  given = {'coordinator_address': address, 'num_processes': count, 'process_id': index}
  if any(v is not None for v in given.values()):
    missing = [k for k, v in given.items() if v is None]
    if missing:
      raise UserError(f"multi-host settings lack {', '.join(missing)}; pass all of "
                      '--coordinator_address, --num_processes and --process_id')
    if ':' not in str(address):
      raise UserError(f'coordinator_address {address!r} has no port; write it as '
                      'HOST:PORT, e.g. 10.0.0.1:1234')
    if not 0 <= index < count:
      raise UserError(f'process_id {index} is not in 0..{count - 1}; number the '
                      f'{count} processes 0 to {count - 1}')
    return given
  if any(int(env.get(v, '1') or 1) > 1 for v in CLUSTER_TASK_VARS):
    return {}
  return None


def initialize(coordinator_address: Optional[str] = None,
               num_processes: Optional[int] = None,
               process_id: Optional[int] = None) -> bool:
  """Joins the multi-host runtime if settings are given; call before any JAX
  computation. Returns True when running with several processes."""
  kwargs = settings(coordinator_address, num_processes, process_id)
  if kwargs is None:
    return False
  # CPU backends need a collectives library for cross-process all-reduces.
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  jax.distributed.initialize(**kwargs)
  return jax.process_count() > 1


def is_primary() -> bool:
  """True in the process that writes files (process 0)."""
  return jax.process_index() == 0
