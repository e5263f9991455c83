"""One line naming the machine a figure came from (CPU model, cores, devices)."""
import os
import platform

import jax


def _cpuinfo() -> dict:
  """The first value of each /proc/cpuinfo key ({} where there is none)."""
  info = {}
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        key, _, value = line.partition(':')
        info.setdefault(key.strip(), value.strip())
  except OSError:
    pass
  return info


def describe() -> str:
  """'AMD EPYC (family 25, AVX2), 2 cores; JAX 0.10.2 on 1 x cpu': the family and the
  widest vector unit tell apart CPUs that share a model name (Zen 3 AVX2, Zen 5 AVX-512)."""
  info = _cpuinfo()
  cpu = info.get('model name') or platform.processor() or 'unknown CPU'
  flags = set(info.get('flags', '').split())
  vector = 'AVX-512' if 'avx512f' in flags else 'AVX2' if 'avx2' in flags else None
  detail = ', '.join(x for x in (info.get('cpu family') and f"family {info['cpu family']}",
                                 vector) if x)
  devices = jax.devices()
  return (f"{cpu}{f' ({detail})' if detail else ''}, {os.cpu_count()} cores; JAX "
          f'{jax.__version__} on {len(devices)} x {devices[0].device_kind}')
