"""The fastest published MNIST recipe (github.com/tuomaso/train_mnist_fast), as a config.

  python -m mnist_jax.main --config=configs/speed_record.py \\
      --config.data.source=idx --config.data.data_dir=$MNIST_DIR
  python -m experiments.speed.benchmark --config=configs/speed_record.py --data_dir=$MNIST_DIR \\
      --loops=scan,warm,torch_record --pytorch_python=PY

The same arithmetic as ``python -m experiments.speed.pytorch_reference --recipe=record``,
so the two frameworks are compared on one model (SpeedNet with this plan, no batch norm):

  28x28x1 -C5-> 24x24x24 -pool-> 12x12x24 -C3-> 10x10x32 -pool-> 5x5x32 -> 800
  -> Dense 256 -> ReLU -> Dense 10                     (ReLU after each pool)

(max-pool and ReLU commute: max(relu(a), relu(b)) = relu(max(a, b))); 215,194
parameters and 1,244,160 multiply-accumulates per image; Adam η = 1e-2, β = (0.7, 0.9),
one-cycle over one epoch (η/25 → η over 30 % of the steps, cosine to η/(25·10⁴)),
batch 256, inputs standardized with (0.1307, 0.3081), no augmentation. Differences
from the PyTorch script, both on purpose: 55,000 training images (the last 5,000 are the
validation split every config holds out), and a fresh shuffle per epoch.

Result: 99.07 % test accuracy after its one epoch (experiments/results/benchmark.md,
its configs/speed_record.py section, which also has its time).
"""
from mnist_jax.config import defaults


def get_config():
  config = defaults.get_config()
  config.model.name = 'speednet'
  config.model.features = (24, 32)       # F per block
  config.model.kernel_sizes = (5, 3)     # K
  config.model.paddings = (0, 0)         # P: 28 -> 24 -> (pool) 12 -> 10 -> (pool) 5
  config.model.dense = (256,)
  config.model.batch_norm = False
  config.model.conv_impl = 'xla'         # one dispatch per step: nn.Conv is fastest there
  config.loop_mode = 'step'
  config.data.standardize = True         # (x − 0.1307) / 0.3081
  config.data.mean, config.data.std = 0.1307, 0.3081   # the PyTorch script's constants
  config.optimizer = 'adam'
  config.learning_rate = 1e-2
  config.momentum = 0.7                  # Adam's β1
  config.b2 = 0.9                        # Adam's β2
  config.schedule = 'onecycle'
  config.batch_size = 256
  config.num_epochs = 1
  config.log_every_steps = 54            # 214 steps: a progress line every quarter
  config.checkpoint_every_epochs = 0
  config.keep_checkpoints = 1
  config.write_plots = False
  return config
