"""The scripts behind the docs' figures, grouped by job; run from the repository root
as ``python -m experiments.<group>.<script>``. Their results go to experiments/results/."""
