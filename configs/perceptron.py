"""The perceptron: one Dense(784 -> 10) layer, softmax + CCE by gradient descent.

  python -m mnist_jax.main --config=configs/perceptron.py
  python -m experiments.concepts.perceptron_rule   # the same layer by Rosenblatt's rule

A linear classifier. The same layer with the step activation has no gradient and
trains with Rosenblatt's rule instead (mnist_jax/models/perceptron.py).

Result: 92.53 % test accuracy after 10 epochs on the full MNIST; Rosenblatt's rule
88.13 % after 5 (experiments/results/perceptron_rule.md).
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
