"""The ensemble record recipe: K = 5 members of configs/record_single.py.

  python -m mnist_jax.main --config=configs/record_ensemble.py \\
      --config.data.source=idx --config.data.data_dir=$MNIST_DIR

Five M5 nets (An et al. 2020, arXiv 2008.10400; seeds 0..4, member 0 is the
single run of configs/record_single.py with seed 0) trained as ONE vmapped
program (engine/ensemble.py); the ensemble predicts the mean of the members'
probabilities, here of their EMA weights (0.999). An et al. report 99.87 % for a
vote of three such nets (M3, M5, M7) and 99.91 % for a two-level ensemble.
The summary reports the ensemble's ECE next to its members' (summary.json
'ensemble'). engine/memory.py's check_memory estimates about 0.2 GiB per member
for a batch of 120.
"""
from mnist_jax.config import files as config_files


def get_config():
  config = config_files.sibling(__file__, 'record_single')
  config.ensemble.size = 5
  return config
