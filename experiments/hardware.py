"""One line naming the machine a figure came from (CPU model, cores, devices)."""
import os
import platform

import jax


def describe() -> str:
  cpu = platform.processor() or 'unknown CPU'
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('model name'):
          cpu = line.split(':', 1)[1].strip()
          break
  except OSError:
    pass
  devices = jax.devices()
  return (f'{cpu}, {os.cpu_count()} cores; JAX {jax.__version__} on '
          f'{len(devices)} x {devices[0].device_kind}')
