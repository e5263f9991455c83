"""VGG (2014) on MNIST: only 3x3 convs, VGG-16's 13 conv + 3 FC layers.

  python -m mnist_jax.main --config=configs/vgg.py
  python -m mnist_jax.main --config=configs/vgg.py --config.model.plan=vgg11
  python -m mnist_jax.main --config=configs/vgg.py --config.model.batch_norm=False

``plan`` is 'vgg11' | 'vgg13' | 'vgg16' | 'vgg19' (the paper's A, B, D, E) or,
in a config file, a tuple of widths and 'M' (max-pool), e.g. (32, 'M', 64, 'M').
Widths are the paper's x ``width`` (1/8: 64..512 -> 8..64). Batch norm is the
later VGG-BN variant: it lets 16 layers train from scratch in a few epochs.

Result: 99.50 % test accuracy after 10 epochs on the full MNIST
(experiments/results/zoo.md, python -m experiments.concepts.zoo --models=vgg).
"""
from mnist_jax.config import defaults


def get_config():
  config = defaults.get_config()
  config.model.name = 'vgg'
  config.model.plan = 'vgg16'
  config.model.width = 0.125                 # multiplier on the paper's widths
  config.model.dense_features = (256, 256)   # FC6, FC7 (paper 4096)
  config.model.batch_norm = True
  config.model.activation = 'relu'
  config.model.leaky_alpha = 0.01
  config.model.dropout_rate = 0.5            # after FC6, FC7 (paper)
  config.model.conv_impl = 'auto'         # CPU: patches + matmul; GPU/TPU: nn.Conv
  defaults.cnn_recipe(config)
  return config
