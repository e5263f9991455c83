"""The naive training loop: the baseline of experiments/speed/benchmark.py's 'naive' loop.

  python -m experiments.speed.naive_loop --config=configs/lenet.py --workdir=/tmp/naive \\
      [--config.data.source=idx --config.data.data_dir=$MNIST_DIR]

Same config, model, optimizer, train_step and eval_step as
``mnist_jax.engine.trainer``; only the feeding differs. Here every step is one
Python iteration: the host draws the batch indices (numpy), gathers and
normalizes x = p / 255 on the host, copies the float batch to the device and
dispatches ``jit(train_step)`` — the pattern of most tutorials (the train state
then augments and standardizes as the config says, as in the trainer).
``mnist_jax.engine.epoch`` instead keeps the uint8 dataset on the device and
runs ``log_every_steps`` steps per dispatch inside one ``lax.scan``. Evaluation
is the same: host batches through ``jit(eval_step)``.

Writes ``WORKDIR/metrics.jsonl`` with the loop's keys (epoch, train_loss,
train_accuracy, train_time_s, images_per_s, val_*, test_*) and logs the loop's
progress and epoch lines, so the benchmark parses both the same way. No
checkpoints (the scan loop does save them: that cost stays on its side).
"""
import json
import os
import time

import jax
import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

from mnist_jax import train
from mnist_jax.config import validate
from mnist_jax.store import workdir as workdir_lib
from mnist_jax.data import pipeline


def host_batch(images, labels, idx):
  """One float batch built on the host: x = p / 255 (numpy), labels int32."""
  return {'image': images[idx].astype(np.float32) / 255.0, 'label': labels[idx]}


def evaluate(state, eval_step, images, labels, batch_size) -> dict:
  """{'loss', 'accuracy'} over a split, one host batch per dispatch."""
  n = len(labels)
  totals = None
  for start in range(0, n, batch_size):
    idx = np.arange(start, min(start + batch_size, n))
    sums = jax.device_get(eval_step(state, host_batch(images, labels, idx)))
    totals = sums if totals is None else {k: totals[k] + sums[k] for k in sums}
  return {'loss': float(totals['loss'] / totals['count']),
          'accuracy': float(totals['correct'] / totals['count'])}


def train_epoch(config, epoch, state, train_step, data, rng) -> dict:
  """One epoch, one Python iteration (and one host->device copy) per step."""
  images, labels = data.train_images, data.train_labels
  steps = train.steps_per_epoch(config, len(labels))
  perm = np.random.default_rng([config.seed, epoch]).permutation(len(labels))
  epoch_rng = jax.random.fold_in(rng, epoch)
  t0 = time.time()
  pending, totals = [], {'loss': 0.0, 'accuracy': 0.0}
  for step in range(steps):
    idx = perm[step * config.batch_size:(step + 1) * config.batch_size]
    # the epoch's key, unchanged: train_step folds state.step into it
    state, metrics = train_step(state, host_batch(images, labels, idx), epoch_rng)
    pending.append(metrics)
    if len(pending) == config.log_every_steps or step == steps - 1:
      for m in jax.device_get(pending):  # one host sync per log interval
        totals = {k: totals[k] + float(m[k]) for k in totals}
      pending = []
      if step < steps - 1:
        logging.info('epoch %d: %d/%d steps (%.0f%%), loss %.4f, %.0f img/s', epoch,
                     step + 1, steps, 100 * (step + 1) / steps, totals['loss'] / (step + 1),
                     (step + 1) * config.batch_size / (time.time() - t0))
  seconds = time.time() - t0
  return {'epoch': epoch, 'state': state, 'train_loss': totals['loss'] / steps,
          'train_accuracy': totals['accuracy'] / steps, 'train_time_s': seconds,
          'images_per_s': steps * config.batch_size / seconds}


def main(argv):
  del argv
  config, workdir = flags.FLAGS.config, flags.FLAGS.workdir
  validate.check(config)
  workdir_lib.prepare(workdir)
  data = pipeline.load(config.data)
  init_rng, train_rng = jax.random.split(jax.random.key(config.seed))
  state = train.create_train_state(config, init_rng, num_train=len(data.train_labels),
                                   num_classes=data.num_classes)
  train_step, eval_step = jax.jit(train.train_step), jax.jit(train.eval_step)
  logging.info('Training %s naively: one host batch per step.', config.model.name)
  path = os.path.join(workdir, 'metrics.jsonl')
  open(path, 'w').close()
  for epoch in range(1, config.num_epochs + 1):
    record = train_epoch(config, epoch, state, train_step, data, train_rng)
    state = record.pop('state')
    splits = [('val', data.val_images, data.val_labels),
              ('test', data.test_images, data.test_labels)]
    for name, images, labels in splits:
      if len(labels):
        result = evaluate(state, eval_step, images, labels, config.eval_batch_size)
        record.update({f'{name}_{k}': v for k, v in result.items()})
    with open(path, 'a') as f:
      f.write(json.dumps(record) + '\n')
    logging.info('epoch %d/%d: train loss %.4f acc %.4f | val %s | test loss %.4f '
                 'acc %.4f | %.0f img/s', epoch, config.num_epochs, record['train_loss'],
                 record['train_accuracy'], f"{record.get('val_accuracy', float('nan')):.4f}",
                 record['test_loss'], record['test_accuracy'], record['images_per_s'])


if __name__ == '__main__':
  config_flags.DEFINE_config_file('config', None, 'Config file (configs/*.py).')
  flags.DEFINE_string('workdir', None, 'Where metrics.jsonl goes.')
  flags.mark_flags_as_required(['config', 'workdir'])
  app.run(main)
