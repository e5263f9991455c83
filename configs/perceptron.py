"""The perceptron: one Dense(784 -> 10) layer, softmax + CCE by gradient descent.

  python -m mnist_jax.main --config=configs/perceptron.py

A linear classifier: about 92 % test accuracy is its ceiling on MNIST.
The same layer trained with Rosenblatt's rule (step activation, no gradient):
  python experiments/concepts/perceptron_rule.py
"""
from mnist_jax.config import defaults


def get_config():
  config = defaults.get_config()
  config.model.name = 'perceptron'
  config.model.activation = 'identity'   # logits z -> the loss's softmax
  config.loss = 'cce'
  config.optimizer = 'adam'
  config.learning_rate = 1e-3
  config.batch_size = 128
  config.num_epochs = 10
  return config
