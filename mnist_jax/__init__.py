"""mnist_jax: deep learning on MNIST, every formula in code.

Import what you need from the submodules; this package import stays light
(no TensorFlow, no device work) so research code can use the pure parts:

  from mnist_jax import models, train, optim
  from mnist_jax.nn import activations, losses
"""

__version__ = "0.1.0"
