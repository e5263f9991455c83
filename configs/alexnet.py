"""AlexNet (2012) on MNIST: 5 conv + 3 FC layers, ReLU, LRN, overlapping pools, dropout.

  python -m mnist_jax.main --config=configs/alexnet.py
  python -m mnist_jax.explain --config=configs/alexnet.py   # shapes, params, MACs
  python -m mnist_jax.main --config=configs/alexnet.py --config.model.lrn=False

The widths are about the paper's (96, 256, 384, 384, 256) / 6, FC 4096 -> 256, and conv1's
kernel is 7 (the paper's 11 at stride 4 is for 224x224 images), so an epoch of 28x28
digits fits a CPU. Trained with defaults.cnn_recipe (Adam, warmup + cosine).

Result: 99.42 % test accuracy after 10 epochs on the full MNIST
(experiments/results/zoo.md, python -m experiments.concepts.zoo --models=alexnet).
"""
from mnist_jax.config import defaults


def get_config():
  config = defaults.get_config()
  config.model.name = 'alexnet'
  config.model.features = (16, 48, 64, 64, 48)  # conv1..conv5 F
  config.model.dense_features = (256, 256)      # FC6, FC7
  config.model.stem_kernel = 7                  # conv1's large K (paper 11, stride 4)
  config.model.lrn = True                       # local response normalization
  config.model.activation = 'relu'
  config.model.leaky_alpha = 0.01
  config.model.dropout_rate = 0.5               # after FC6, FC7 (paper)
  config.model.conv_impl = 'auto'         # CPU: patches + matmul; GPU/TPU: nn.Conv
  defaults.cnn_recipe(config, learning_rate=1e-3)
  return config
