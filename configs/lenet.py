"""LeNet-5 (modern: ReLU, max-pool) on MNIST with the zoo's training recipe.

  python -m mnist_jax.main --config=configs/lenet.py
  python -m mnist_jax.sweep --config=configs/lenet.py --workdir=sweeps/lenet [--vectorize]

Result: 99.32 % test accuracy after 10 epochs on the full MNIST
(experiments/results/lenet.md, python -m experiments.concepts.reproduce --config=configs/lenet.py).
"""
from mnist_jax.config import defaults


def get_config():
  config = defaults.get_config()
  config.model.name = 'lenet5'
  config.model.variant = 'modern'
  config.model.dropout_rate = 0.0
  config.model.conv_impl = 'auto'         # CPU: patches + matmul; GPU/TPU: nn.Conv
  defaults.cnn_recipe(config)   # Adam 2e-3, warmup + cosine, B = 128, E = 10, ±1 px / ±10°
  return config


def get_hyper(h):
  """The sweep (mnist_jax/search/hyper.py): η × dropout p, 3 x 2 = 6 trials, all one
  vectorizable group (they differ only in per-trial hyperparameters).
  A random search instead: h.random('config.learning_rate', h.loguniform(5e-4, 8e-3),
  n=8, seed=0)."""
  return h.product([
      h.sweep('config.learning_rate', [1e-3, 2e-3, 4e-3]),
      h.sweep('config.model.dropout_rate', [0.0, 0.25]),
  ])
