"""Command line: predicting digits of your own images with a trained run.

  python -m mnist_jax.predict --workdir=DIR [--which=best|latest] a.png b.jpg ...

prints per image the predicted digit and the top-3 probabilities p = softmax(z);
for an ensemble run (config.ensemble.size = K) p is the mean of the K members'
probabilities and the line adds their disagreement: 'spread' = std over the
members of p_k(ŷ), 'dissent' = the fraction of members whose own digit is not ŷ.
Each image becomes a 28x28 input by inspection/image.py's ``prepare_image``
(grayscale, invert, crop, then for a digit run the 20 px box and centre of mass,
else fitted to 28 px and centred, as the run recorded); the run's train state
then applies the preprocessing it was trained with. The run is read by
engine/rundir.py's load_trained (its weights: config.model_weights, raw unless the run says ema).
"""
import numpy as np
from absl import app, flags

from mnist_jax import cli
from mnist_jax.errors import UserError
from mnist_jax.inspection.image import load_image, prepare_image


def top_k(probs: np.ndarray, k: int = 3):
  """[(class, probability)] of the ``k`` most likely classes of one prediction."""
  order = np.argsort(-probs)[:k]
  return [(int(c), float(probs[c])) for c in order]


def format_line(path: str, probs: np.ndarray, disagreement=None, names=None) -> str:
  """'path: ŷ  (ŷ: p, …)' with the top 3, classes by ``names`` (default '0', '1', …)."""
  top = top_k(probs)
  name = (lambda c: str(names[c])) if names else str
  line = (f'{path}: {name(top[0][0])}  ('
          + ', '.join(f'{name(c)}: {p:.3f}' for c, p in top) + ')')
  if disagreement is not None:
    line += (f"  members: spread {disagreement['spread']:.3f}, "
             f"dissent {disagreement['dissent']:.2f}")
  return line


def predict_files(workdir: str, paths, which: str = 'best') -> list:
  """[(path, probabilities (K,), disagreement)] for image files, with the run's
  checkpoint; disagreement is None for a single model, else {'spread', 'dissent'}."""
  return classify(workdir, paths, which)[1]


def classify(workdir: str, paths, which: str = 'best') -> tuple:
  """(the run, an engine.rundir.Trained, and ``predict_files``' list); the images
  are read before the run is loaded, so a bad path fails at once."""
  if not paths:
    raise UserError('no image given; pass image files after the flags, e.g. '
                    'python -m mnist_jax.predict --workdir=DIR digit.png')
  pictures = []
  for path in paths:
    try:
      pictures.append(load_image(path))
    except UserError as e:
      raise UserError(e if path in str(e) else f'{path}: {e}') from None
  # pylint: disable-next=g-import-not-at-top
  from mnist_jax.engine import ensemble, evaluation, rundir
  run = rundir.load_trained(workdir, which)
  inputs = []
  for path, picture in zip(paths, pictures):
    try:
      inputs.append(prepare_image(picture, digits=run.digits))
    except UserError as e:
      raise UserError(e if path in str(e) else f'{path}: {e}') from None
  members = evaluation.predict_members(run.state, np.stack(inputs))
  probs = ensemble.combine(members)
  if len(members) == 1:
    return run, [(p, q, None) for p, q in zip(paths, probs)]
  d = ensemble.disagreement(members)
  return run, [(p, q, {'spread': float(s), 'dissent': float(f)})
               for p, q, s, f in zip(paths, probs, d['spread'], d['dissent'])]


def main(argv):
  fl = flags.FLAGS
  cli.start()
  with cli.one_line_errors():
    run, results = classify(fl.workdir, argv[1:], fl.which)
  for path, probs, disagreement in results:
    print(format_line(path, probs, disagreement, run.label_names))


if __name__ == '__main__':
  cli.define_cache_flag()
  flags.DEFINE_string('workdir', None, 'Run directory written by mnist_jax.main.')
  flags.DEFINE_enum('which', 'best', ['best', 'latest'], 'Checkpoint to use.')
  flags.mark_flags_as_required(['workdir'])
  app.run(main, flags_parser=lambda argv: cli.parse_flags(argv, positional=True))
