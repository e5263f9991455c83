"""The primer's MLP: 784 -> 500 -> 10 (392,000 + 500 parameters in layer 1).

  python -m mnist_jax.main --config=configs/mlp.py
  python -m mnist_jax.main --config=configs/mlp.py --config.model.hidden='(512, 256)' \\
      --config.model.activation=tanh

ReLU, dropout 0.2, Adam with a cosine schedule, 15 epochs.

Result: 98.23 % test accuracy after 15 epochs on the full MNIST
(experiments/results/mlp.md, python -m experiments.concepts.reproduce --config=configs/mlp.py).
"""
from mnist_jax.config import defaults


def get_config():
  config = defaults.get_config()
  config.model.name = 'mlp'
  config.model.hidden = (500,)           # widths of the hidden layers (depth = len)
  config.model.activation = 'relu'
  config.model.leaky_alpha = 0.01
  config.model.dropout_rate = 0.2        # p
  config.loss = 'cce'
  config.optimizer = 'adam'
  config.learning_rate = 1e-3            # η
  config.schedule = 'cosine'
  config.batch_size = 128                # B
  config.num_epochs = 15                 # E
  return config
