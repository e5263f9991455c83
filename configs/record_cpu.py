"""The record recipe sized for a CPU: 3 x configs/cnn.py's net, stronger augmentation, EMA.

  python -m mnist_jax.main --config=configs/record_cpu.py
  (--config.ensemble.size=1 --config.seed=S for one member alone)
  python -m experiments.ensembles.ensemble_run --config=configs/record_cpu.py --size=0 \\
      --epochs=0 --data_dir=$MNIST_DIR --name=record_cpu   # members vs ensemble

configs/record_single.py (An et al.'s M5, 150 epochs) is hours per model on a CPU;
this recipe is sized to fit one. The net is configs/cnn.py's (3 x [conv 3x3 -> BN ->
ReLU -> max-pool 2], 32/64/128 filters, Dense 128, dropout 0.3), trained for E = 20
epochs with Adam (peak η = 2e-3, warmup + cosine), shifts of ±2 px, rotations of ±15°
and scalings of ±10 %, and an EMA of the weights (θ_ema ← d_t θ_ema + (1 − d_t) θ
after every step, d_t = min(0.999, (1 + t)/(10 + t))). K = 3 members (seeds 0, 1, 2)
train as one vmapped program; the ensemble predicts the mean of the members'
probabilities.

The model is the EMA weights (config.model_weights = 'ema': 'best', predict, serve
and evaluate use them; summary.json 'test_accuracy_ema' at the last epoch for the
ensemble, the members' under 'ensemble'); validation (the last 5,000 training
images) is the trail of every epoch; the test set is read for the report.

Result: members 99.50 ± 0.03 % test accuracy (seeds 0-2), the ensemble of 3
99.62 % (experiments/results/ensemble_record_cpu_mnist.md).
"""
from mnist_jax.config import files as config_files


def get_config():
  config = config_files.sibling(__file__, 'cnn')   # the net and defaults.cnn_recipe
  config.num_epochs = 20
  config.augment.translate = 2.0
  config.augment.rotate = 15.0
  config.augment.scale = 0.1
  config.ema_decay = 0.999
  config.model_weights = 'ema'            # the EMA weights are the model
  config.ensemble.size = 3
  config.checkpoint_every_epochs = 5
  config.write_plots = True
  return config
