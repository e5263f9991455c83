"""The engine: the trainer for one model (trainer.py) and its pieces (epoch.py,
evaluation.py, workdir.py, summary.py, checkpoint.py); K models as vmap on top
(stacked.py; ensemble.py the prediction type); a run read back (rundir.py)."""
