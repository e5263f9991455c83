"""The engine: the trainer for one model (trainer.py) and its pieces (epoch.py,
evaluation.py, summary.py); K models as vmap on top (stacked.py; ensemble.py the
prediction type); a run read back as states (rundir.py). Its files: mnist_jax.store."""
