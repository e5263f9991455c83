"""A configurable CNN from the primer's building blocks.

Per conv block b (F = features[b] filters):
  Conv K×K, stride S, padding P -> [BatchNorm] -> activation -> [Pool]
then flatten -> [Dropout -> Dense -> activation] per ``dense`` width -> Dropout -> Dense 10.

Convolution (one filter over a C-channel input): FM[i, j] = Σ_{u,v,c} K[u,v,c] ·
x[S·i + u, S·j + v, c] + b. Output size per side (W − K + 2P)/S + 1; a layer has
K·K·C·F weights + F biases (C follows from the input: 1 for MNIST, then the
previous layer's F). With batch norm the conv has no bias (BN's β replaces it).

Pooling (``pool``: 'max' | 'avg' | 'none', window = stride = ``pool_size``):
max or mean over each window; output size ⌊W / pool_size⌋.

Batch normalization over the mini-batch B (per channel):
  x̂ = (x − μ_B) / √(σ²_B + ε),  y = γ x̂ + β.
Training (``train=True``) uses the batch's μ_B, σ²_B and updates the running
averages μ ← m·μ + (1 − m)·μ_B (same for σ²) in the 'batch_stats' collection;
evaluation uses the running averages. Under ``axis_name`` μ_B and σ²_B are
averaged over devices, so D devices normalize like one device on the whole batch.

Dropout (rate p, 'dropout' rng) before every Dense layer, only when training:
y = m ⊙ x / (1 − p), m_i ~ Bernoulli(1 − p).

``conv`` and ``max_pool`` are the layers: nn.Conv and nn.max_pool, or their drop-in
replacements with the same parameters and results (nn/fast_layers.py), as
models.layers_for picks them from config.model.conv_impl and the platform.
"""
from typing import Any, Callable, Optional, Union

import jax.numpy as jnp
from flax import linen as nn

from mnist_jax.nn import activations
from mnist_jax.nn.dropout import Dropout

ModuleDef = Any

POOLS = ('max', 'avg', 'none')


class CNN(nn.Module):
  """Conv blocks + dense head; every term of the primer is a field."""
  num_classes: int = 10
  features: tuple = (32, 64)          # F per conv block
  kernel_size: int = 3                # K
  strides: int = 1                    # S
  padding: Union[str, int] = 'SAME'   # P: 'SAME' | 'VALID' | int (or '2') zeros per side
  pool: str = 'max'                   # 'max' | 'avg' | 'none'
  pool_size: int = 2
  batch_norm: bool = True
  bn_momentum: float = 0.9            # m of the running averages
  dense: tuple = (128,)               # hidden widths of the head
  activation: str = 'relu'
  leaky_alpha: float = 0.01
  dropout_rate: float = 0.0           # p; a dropout_rate given to __call__ replaces it
  axis_name: Optional[str] = None     # cross-device batch statistics under pmap
  dtype: Any = jnp.float32
  conv: ModuleDef = nn.Conv
  max_pool: Callable = nn.max_pool

  @nn.compact
  def __call__(self, x, train: bool = False, dropout_rate=None):
    if self.pool not in POOLS:
      raise ValueError(f"CNN.pool must be one of {POOLS}, got {self.pool!r}")
    act = activations.get(self.activation, leaky_alpha=self.leaky_alpha)
    p = self.dropout_rate if dropout_rate is None else dropout_rate
    k, s, w = self.kernel_size, self.strides, self.pool_size
    padding = self.padding
    if isinstance(padding, str):   # '1' from a command-line override means P = 1
      padding = int(padding) if padding.isdigit() else padding.upper()
    x = x.astype(self.dtype)
    for i, f in enumerate(self.features):
      x = self.conv(f, (k, k), strides=(s, s), padding=padding,
                    use_bias=not self.batch_norm, dtype=self.dtype, name=f'conv_{i}')(x)
      if self.batch_norm:
        x = nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum,
                         epsilon=1e-5, axis_name=self.axis_name, dtype=self.dtype,
                         name=f'bn_{i}')(x)
      x = act(x)
      if self.pool == 'max':
        x = self.max_pool(x, (w, w), strides=(w, w))
      elif self.pool == 'avg':
        x = nn.avg_pool(x, (w, w), strides=(w, w))
    x = x.reshape((x.shape[0], -1))
    for i, width in enumerate(self.dense):
      x = Dropout(p, deterministic=not train)(x)
      x = act(nn.Dense(width, dtype=self.dtype, name=f'dense_{i}')(x))
    x = Dropout(p, deterministic=not train)(x)
    x = nn.Dense(self.num_classes, dtype=self.dtype, name='output')(x)
    return x.astype(jnp.float32)
