"""The engine: one epoch driver for K >= 1 models (driver.py, stacked.py), ensembles
(ensemble.py), evaluation and calibration (evaluation.py, calibration.py), checkpoints,
the run directory (lock, config.json) and reading a run back (rundir.py)."""
