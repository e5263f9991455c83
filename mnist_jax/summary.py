"""``python -m mnist_jax.summary`` was the explainer's first name: it now says, in one
line, to run ``python -m mnist_jax.explain`` ('summary' means a run's summary.json)."""
import sys

if __name__ == '__main__':
  print('error: mnist_jax.summary is now mnist_jax.explain; run python -m mnist_jax.explain '
        '--config=configs/lenet.py', file=sys.stderr)
  sys.exit(2)
