"""mnist_jax: deep learning on MNIST, every formula in code.

Import what you need from the submodules; this package import stays light
(no TensorFlow, no device work) so research code can use the pure parts:

  from mnist_jax import models, train
  from mnist_jax.config import defaults
  from mnist_jax.nn import activations, losses, optim

The layout, by job and in layers (each imports only those below it): commands
(main, sweep, evaluate, predict, plots, explain) > cli > api > search,
inspection > engine > train, parallel > models, config > nn, data > errors.
"""

__version__ = "0.2.0"
