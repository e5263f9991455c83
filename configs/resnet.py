"""ResNet (2015) on MNIST: ResNet-18's layout (basic blocks 2-2-2-2) at 1/4 width.

  python -m mnist_jax.main --config=configs/resnet.py
  python -m mnist_jax.main --config=configs/resnet.py \\
      --config.model.block=bottleneck --config.model.stage_sizes='(3, 4, 6, 3)'  # ResNet-50 layout

Residual blocks y = act(F(x) + x), a 1x1 projection where the shape changes.
Widths (16, 32, 64, 128) are the paper's (64, 128, 256, 512) / 4.

Result: 99.49 % test accuracy after 10 epochs on the full MNIST
(experiments/results/zoo.md, python -m experiments.concepts.zoo --models=resnet).
"""
from mnist_jax.config import defaults


def get_config():
  config = defaults.get_config()
  config.model.name = 'resnet'
  config.model.stage_sizes = (2, 2, 2, 2)   # blocks per stage
  config.model.block = 'basic'              # 'basic' | 'bottleneck'
  config.model.widths = (16, 32, 64, 128)   # F per stage
  config.model.stem_features = 16
  config.model.stem_pool = True             # 3x3/2 max-pool after the stem
  config.model.zero_init_residual = True    # γ = 0 in each block's last BN
  config.model.activation = 'relu'
  config.model.leaky_alpha = 0.01
  config.model.dropout_rate = 0.0
  config.model.conv_impl = 'auto'         # CPU: patches + matmul; GPU/TPU: nn.Conv
  defaults.cnn_recipe(config)
  return config
