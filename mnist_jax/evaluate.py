"""Evaluation of a saved checkpoint: validation and test metrics of one run.

  python -m mnist_jax.evaluate --workdir=DIR [--which=best|latest] [--data_dir=DIR]

prints one JSON line and one human line. Over a split of N examples:
  loss     = (1/N) Σ_i ℓ(f(x_i; w), onehot(y_i))      (the run's config.loss)
  accuracy = (1/N) Σ_i 1[argmax_k f(x_i; w)_k = y_i]
computed in batches of config.eval_batch_size; the last batch is padded and
its padding masked out, so every example counts exactly once.
"""
import json
import sys

from mnist_jax import loop, parallel, runs
from mnist_jax.errors import UserError


def metrics(state, images, labels, *, batch_size: int = 1000,
            standardize: bool = False) -> dict:
  """{'loss', 'accuracy', 'count'} of uint8 ``images`` (N, 28, 28, 1) and ``labels``,
  with the training loop's own compiled evaluation (all local devices)."""
  n = len(labels)
  if n == 0:
    return {'loss': float('nan'), 'accuracy': float('nan'), 'count': 0}
  mesh = parallel.make_mesh()
  size = min(batch_size, n)
  size += -size % mesh.devices.size
  split = loop.padded_split(images, labels, size, mesh)
  eval_fn = loop.make_eval_fn(mesh, standardize, size)
  return {**loop.evaluate(parallel.replicate(state, mesh), split, eval_fn), 'count': n}


def run(workdir: str, which: str = 'best', data_dir=None) -> dict:
  """Val and test metrics of the ``which`` checkpoint of ``workdir``:
  {'workdir', 'which', 'epoch', 'val': {...}, 'test': {...}}."""
  config = runs.load_config(workdir)
  data = runs.load_data(config, data_dir)
  _, state, meta = runs.load_run(workdir, which, num_classes=data.num_classes)
  kwargs = dict(batch_size=config.eval_batch_size, standardize=config.data.standardize)
  result = {'workdir': workdir, 'which': which, 'epoch': meta['epoch']}
  if len(data.val_labels):
    result['val'] = metrics(state, data.val_images, data.val_labels, **kwargs)
  result['test'] = metrics(state, data.test_images, data.test_labels, **kwargs)
  return result


def format_line(result: dict) -> str:
  parts = [f"{split} loss {result[split]['loss']:.4f} accuracy {result[split]['accuracy']:.4f}"
           f" ({result[split]['count']} images)" for split in ('val', 'test') if split in result]
  return f"{result['which']} checkpoint (epoch {result['epoch']}): " + ' | '.join(parts)


def main(argv):
  from absl import flags  # pylint: disable=g-import-not-at-top
  if len(argv) > 1:
    print(f'error: unexpected arguments {" ".join(argv[1:])}; pass only flags',
          file=sys.stderr)
    sys.exit(2)
  fl = flags.FLAGS
  runs.quiet_orbax_logs()
  try:
    result = run(fl.workdir, fl.which, fl.data_dir)
  except UserError as e:
    print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
    sys.exit(2)
  print(json.dumps(result, sort_keys=True))
  print(format_line(result))


if __name__ == '__main__':
  from absl import app, flags  # pylint: disable=g-import-not-at-top
  flags.DEFINE_string('workdir', None, 'Run directory written by mnist_jax.main.')
  flags.DEFINE_enum('which', 'best', ['best', 'latest'], 'Checkpoint to evaluate.')
  flags.DEFINE_string('data_dir', None, "Override the run's config.data.data_dir.")
  flags.mark_flags_as_required(['workdir'])
  app.run(main)
