"""GoogLeNet (2014) on MNIST: the paper's nine Inception modules at 1/8 width.

  python -m mnist_jax.main --config=configs/googlenet.py
  python -m mnist_jax.main --config=configs/googlenet.py --config.model.plan=small
  python -m mnist_jax.main --config=configs/googlenet.py --config.model.branch5=double3x3

``plan`` is 'googlenet' (3a, 3b, pool, 4a-4e, pool, 5a, 5b) or 'small' (3a, 3b,
pool, 4a, 4b); in a config file also a tuple of module names, 6-tuples (#1x1,
#3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj) and 'M'. Batch norm is not in
the paper (Inception-v2 added it).

Result: 99.49 % test accuracy after 10 epochs on the full MNIST
(experiments/results/zoo.md, python -m experiments.concepts.zoo --models=googlenet).
"""
from mnist_jax.config import defaults


def get_config():
  config = defaults.get_config()
  config.model.name = 'googlenet'
  config.model.plan = 'googlenet'
  config.model.width = 0.125          # multiplier on the paper's module widths
  config.model.stem_features = 24     # paper: 192 maps before inception 3a
  config.model.branch5 = '5x5'        # '5x5' | 'double3x3'
  config.model.batch_norm = True
  config.model.activation = 'relu'
  config.model.leaky_alpha = 0.01
  config.model.dropout_rate = 0.4     # before the classifier (paper)
  config.model.conv_impl = 'auto'         # CPU: patches + matmul; GPU/TPU: nn.Conv
  defaults.cnn_recipe(config)
  return config
