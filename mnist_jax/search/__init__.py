"""Hyperparameter search: get_hyper(h) declarations (hyper.py) and the sweep runner (runner.py)."""
