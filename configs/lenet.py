"""LeNet-5 (modern: ReLU, max-pool) on MNIST; >= 99.0 % test accuracy.

  python -m mnist_jax.main --config=configs/lenet.py
"""
from mnist_jax import defaults


def get_config():
  config = defaults.get_config()
  config.model.name = 'lenet5'
  config.model.variant = 'modern'
  config.model.dropout_rate = 0.0
  config.optimizer = 'adam'
  config.learning_rate = 2e-3
  config.schedule = 'warmup_cosine'
  config.warmup_epochs = 0.5
  config.batch_size = 128
  config.num_epochs = 8
  return config
