"""Ensembles: members vs ensemble, calibration, and the cost of K members."""
