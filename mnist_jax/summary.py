"""The explainer's first name: ``python -m mnist_jax.summary`` runs
``python -m mnist_jax.explain`` (kept so existing commands work; 'summary' now
means only a run's summary.json)."""
import runpy

if __name__ == '__main__':
  runpy.run_module('mnist_jax.explain', run_name='__main__', alter_sys=True)
