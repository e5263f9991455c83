"""DenseNet-BC (2017) on MNIST: 3 dense blocks (3, 6, 12 layers), k = 12, θ = 0.5.

  python -m mnist_jax.main --config=configs/densenet.py
  python -m mnist_jax.main --config=configs/densenet.py --config.model.compression=1.0 \\
      --config.model.bottleneck=False    # plain DenseNet (no B, no C)

Each layer sees the concatenation of all earlier maps, x_l = H_l([x_0..x_{l-1}]),
and adds k = growth_rate maps; the transitions keep θ of the channels.

Result: 99.58 % test accuracy after 10 epochs on the full MNIST, 99.61 % after 20
(--config.num_epochs=20) (experiments/results/zoo.md, python -m experiments.concepts.zoo
--models=densenet,densenet_long).
"""
from mnist_jax.config import defaults


def get_config():
  config = defaults.get_config()
  config.model.name = 'densenet'
  config.model.block_sizes = (3, 6, 12)   # layers per dense block
  config.model.growth_rate = 12           # k
  config.model.compression = 0.5          # θ in the transitions
  config.model.bottleneck = True          # 1x1 conv to bn_size·k before the 3x3
  config.model.bn_size = 4
  config.model.stem_features = 0          # 0: 2k
  config.model.activation = 'relu'
  config.model.leaky_alpha = 0.01
  config.model.dropout_rate = 0.0
  config.model.conv_impl = 'auto'         # CPU: patches + matmul; GPU/TPU: nn.Conv
  defaults.cnn_recipe(config)
  return config
