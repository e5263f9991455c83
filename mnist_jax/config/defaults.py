"""The full config schema with defaults; every ``configs/*.py`` starts from it.

Keys not defined here are rejected (ml_collections refuses unknown
``--config.key=value`` overrides), so a typo is an error, not a silent no-op.
The primer's hyperparameters, with its typical values:

| primer          | symbol | key                 | typical     |
|-----------------|--------|---------------------|-------------|
| learning rate   | η, α   | learning_rate       | 0.001       |
| batch size      | B      | batch_size          | 32, 64, 128 |
| epochs          | E      | num_epochs          | 10–100      |
| momentum        | β      | momentum            | 0.9         |
| dropout rate    | p      | model.dropout_rate  | 0.2–0.5     |
| weight decay    | λ      | weight_decay        | 1e-4        |
"""
import ml_collections
from ml_collections import config_dict


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0

  c.data = ml_collections.ConfigDict()
  c.data.source = 'idx'           # 'idx' (the four IDX files) | 'tfds' (the tfds extra)
  c.data.name = 'mnist'           # tfds: any 28x28x1 classification set: fashion_mnist, kmnist
  c.data.data_dir = config_dict.placeholder(str)  # IDX folder (None: ~/.cache/mnist_jax/<name>)
                                                  # / TFDS data_dir (None: TFDS's)
  c.data.download = True          # fetch missing data: MNIST from data.mirror / TFDS's download
  c.data.mirror = config_dict.placeholder(str)    # URL of the four .gz IDX files (None: MNIST's)
  c.data.sha256 = config_dict.placeholder(tuple)  # of the decompressed train images, train
                                                  # labels, test images, test labels (None: MNIST's)
  c.data.val_size = 5000          # validation images carved from the end of train
  c.data.standardize = False      # x' = (x - mean) / std after x = p / 255
  # What the data is (data/describe.py): None = read from the run's own data when it
  # starts training, then recorded in config.json for everything that uses the run.
  c.data.mean = config_dict.placeholder(float)    # μ of x over the training split
  c.data.std = config_dict.placeholder(float)     # σ of x over the training split
  c.data.num_classes = config_dict.placeholder(int)   # K: the dataset's classes
  c.data.label_names = config_dict.placeholder(tuple)  # K names ('0', '1', ... if none)
  c.data.digits = config_dict.placeholder(bool)   # MNIST-style digits (20 px box, centre of mass)
  c.data.num_train = config_dict.placeholder(int)     # N training images
  c.data.train_limit = 0          # use only the first N train images (0 = all)
  c.data.per_device_shards = False  # devices sample only their 1/D of train (parallel/shards.py)

  c.model = ml_collections.ConfigDict()
  c.model.name = 'lenet5'

  c.loss = 'cce'                  # 'cce' | 'cce_smooth' (α = 0.1) | 'bce' | 'mse' | 'mae'

  c.optimizer = 'adam'            # 'sgd' | 'momentum' | 'nesterov' | 'adam' | 'adamw' | 'muon'
  c.learning_rate = 1e-3          # η: peak learning rate
  c.momentum = 0.9                # β: momentum / nesterov; Adam's b1
  c.b2 = 0.999                    # Adam's second-moment decay
  c.weight_decay = 0.0            # λ
  c.weight_decay_mode = 'decoupled'  # 'decoupled' (AdamW-style) | 'l2' (λ‖w‖² in the loss)
  c.schedule = 'constant'         # 'constant' | 'cosine' | 'warmup_cosine' | 'onecycle'
  c.warmup_epochs = 0.0
  c.grad_clip_norm = 0.0          # clip the global gradient norm (0 = off)
  c.norm_bias_lr_scale = 1.0      # c: BatchNorm/LayerNorm biases step c·η_t (nn/optim.py)

  c.batch_size = 128              # B: global batch, split over the devices
  c.num_epochs = 10               # E
  c.eval_batch_size = 1000
  c.eval_test_every_epoch = False  # True: test metrics in every epoch's record (curves);
                                   # off, the test split is read once, at the end

  c.augment = ml_collections.ConfigDict()
  c.augment.translate = 0.0       # max shift in pixels
  c.augment.rotate = 0.0          # max rotation in degrees
  c.augment.scale = 0.0           # max relative scale change (0.1 = ±10 %)
  c.augment.elastic_alpha = 0.0   # elastic distortion strength in pixels (Simard 2003)
  c.augment.elastic_sigma = 4.0   # elastic smoothing (Gaussian σ in pixels)

  c.num_devices = 0               # data-parallel devices (0 = all local devices)
  c.compute_dtype = 'float32'     # 'float32' | 'bfloat16' (params stay float32)
  c.log_every_steps = 200         # progress line every N steps within an epoch
  c.loop_mode = 'scan'            # 'scan': lax.scan per log_every_steps | 'step': a dispatch a step
  c.cpu_ynnpack = True            # XLA:CPU's YNNPACK kernels (its default); False: XLA's own
                                  # for the step and evaluation (train.compiler_options)
  c.checkpoint_every_epochs = 1   # 0 = only at the end
  c.keep_checkpoints = 2
  c.write_plots = True            # curves, confusion matrix, filters... in workdir/plots

  c.ensemble = ml_collections.ConfigDict()
  c.ensemble.size = 1             # K members (seeds seed..seed+K-1), one vmapped program
  c.ema_decay = 0.0               # d of θ_ema ← d_t·θ_ema + (1 − d_t)·θ, d_t = min(d, (1+t)/(10+t))
  c.model_weights = 'raw'         # which weights are the model: 'raw' | 'ema' (needs ema_decay)
  return c


def cnn_recipe(config, learning_rate: float = 2e-3) -> ml_collections.ConfigDict:
  """The training recipe the CNN and the architecture zoo share: Adam with peak
  η = ``learning_rate``, linear warmup over 0.5 epochs then cosine decay, B = 128,
  E = 10, and light augmentation (shifts of ±1 px, rotations of ±10°)."""
  config.optimizer = 'adam'
  config.learning_rate = learning_rate
  config.schedule = 'warmup_cosine'
  config.warmup_epochs = 0.5
  config.batch_size = 128
  config.num_epochs = 10
  config.augment.translate = 1.0
  config.augment.rotate = 10.0
  return config
