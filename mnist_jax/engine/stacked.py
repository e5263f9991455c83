"""K models as one program: vectorized trials and an ensemble's members train as
the trainer's step under ``jax.vmap`` over one stacked state.

Models k = 1..K that differ only in η_k (peak learning rate), β_k (momentum),
λ_k (weight decay), p_k (dropout rate) and their seed take each step together,

  (w_k, s_k), m_k = train_step((w_k, s_k), batch_k, rng_k)    for all k at once,

with their parameters, optimizer states and hyperparameters stacked on axis 0
(train.stacked_axes). Each model computes what its own run of engine/trainer.py
computes (same config, same seed), up to float rounding:

  η_k, β_k, λ_k  ``opt_state.hyperparams['learning_rate' | 'momentum' |
       'weight_decay']`` per model: every optax chain injects them as arrays
       and computes η_k(t) = η_k · s(t) with the peak-1 schedule s (nn/optim.py);
  p_k  the model's ``dropout_rate`` call argument, an array under vmap
       (nn/dropout.py: y = m · x/(1 − p_k), m ~ Bernoulli(1 − p_k)), for models
       whose __call__ takes it (models.takes_dropout_rate); for others p is part
       of the group signature;
  seed_k  initial parameters and the rngs (dropout, augmentation, data order).

Models with equal seeds (the usual sweep: one seed, many η) see the same
batches and draw the same augmentations and dropout uniforms, so the batch and
the step key enter vmap unbatched: the augmentation, the one-hot targets and
C1's input patches are computed once for all K models. On XLA:CPU a vmapped
nn.Conv whose input and kernel both carry the model axis becomes a grouped
convolution, so every conv model runs with its convolutions as patches +
matmul (models.vmapped), which vmap batches into one matmul.

The K models form R runs of M members: vectorized trials are K runs of one
model (a workdir each); an ensemble (config.ensemble.size = M) is one run of
its M members (one workdir, one checkpoint of the stacked members). A run's
epoch record is its models' (M = 1), or its ensemble's metrics (the mean
distribution, engine/evaluation.py), the members' mean train metrics and each
member's under 'member<k>_'. ``train`` is the trainer's loop over the runs,
built from the trainer's pieces: data, epoch, evaluation, run files, summary.
"""
import contextlib
import dataclasses
import functools
import json
import time
from typing import Any, List, Optional

import jax
import jax.numpy as jnp
import numpy as np

from mnist_jax import models, parallel, train as train_lib
from mnist_jax.engine import (ensemble, epoch as epoch_lib, evaluation, summary as summary_lib,
                              trainer)
from mnist_jax.store import selection, workdir as workdir_lib, writers
from mnist_jax.errors import UserError
from mnist_jax.nn import optim


def per_trial_keys(config) -> tuple:
  """The config keys that may differ between the models of one group."""
  keys = ['seed', 'learning_rate', 'momentum']
  if config.weight_decay_mode == 'decoupled' or config.optimizer == 'adamw':
    keys.append('weight_decay')  # 'l2' weight decay is a static loss term
  if models.takes_dropout_rate(models.get_class(config.model.name)):
    keys.append('model.dropout_rate')
  return tuple(keys)


def signature(config) -> str:
  """Models with equal signatures can train together (equal up to per_trial_keys)."""
  flat = json.loads(config.to_json_best_effort())
  for key in per_trial_keys(config):
    *parents, leaf = key.split('.')
    node = flat
    for p in parents:
      node = node[p]
    node.pop(leaf, None)
  flat['decoupled_decay_on'] = config.weight_decay > 0  # changes the optax chain
  return json.dumps(flat, sort_keys=True, default=str)


def groups(configs) -> List[List[int]]:
  """Indices of ``configs`` grouped by signature, in first-seen order."""
  out = {}
  for i, c in enumerate(configs):
    out.setdefault(signature(c), []).append(i)
  return list(out.values())


def step(states, batch, rng, dropout_rate=None):
  """``train.train_step`` for every model. ``batch`` is shared ((B, 28, 28, 1)
  images) or per model ((K, B, 28, 28, 1)); ``rng`` one key shared by all
  models (equal seeds) or (K,) keys; ``dropout_rate`` p_k, shape (K,), given to
  each model's call, or None (each model's own p)."""

  def one(state, batch, rng, p):
    if p is None:
      return train_lib.train_step(state, batch, rng)
    own = state.apply_fn
    state = state.replace(apply_fn=functools.partial(own, dropout_rate=p))
    state, metrics = train_lib.train_step(state, batch, rng)
    return state.replace(apply_fn=own), metrics

  axes = train_lib.stacked_axes(states)
  return jax.vmap(one, in_axes=(axes, None if batch['image'].ndim == 4 else 0,
                                None if rng.ndim == 0 else 0, 0),
                  out_axes=(axes, 0))(states, batch, rng, dropout_rate)


def _stack(trees):
  return jax.tree_util.tree_map(lambda *a: jnp.stack(a), *trees)


def _pick(tree, i):
  return jax.tree_util.tree_map(lambda v: v[i], tree)


@dataclasses.dataclass
class Group:
  """K ≥ 2 models of one signature: their state stacked on axis 0, as R runs of M."""
  configs: list        # one per model
  state: Any
  dropout_rate: Optional[jax.Array]  # (K,) p_k for the models' calls; None: their own p
  train_keys: list     # K keys: data order, dropout, augmentation
  templates: list      # each model's own TrainState (its form as a single run)
  members: int = 1     # M: models per run (an ensemble's size)

  @property
  def size(self) -> int:
    return len(self.configs)

  @property
  def shared_data(self) -> bool:
    """Equal seeds: one data order and one key per step, shared by all models."""
    return len({c.seed for c in self.configs}) == 1

  def member(self, k: int):
    """Model k as its single run's TrainState."""
    s = _pick(self.state.replace(step=None), k)
    return self.templates[k].replace(step=self.state.step, params=s.params,
                                     batch_stats=s.batch_stats, ema=s.ema,
                                     opt_state=s.opt_state)

  def run_state(self, r: int):
    """The state run r checkpoints: model r's TrainState, or the stacked members."""
    return self.member(r) if self.members == 1 else self.state

  def stack_runs(self, states):
    """The group's stacked state made of the runs' states (``run_state``'s form)."""
    if self.members > 1:
      return states[0]
    return self.state.replace(
        step=states[0].step, params=_stack([s.params for s in states]),
        batch_stats=_stack([s.batch_stats for s in states]),
        ema=_stack([s.ema for s in states]), opt_state=_stack([s.opt_state for s in states]))

  def epoch_order(self, feed, epoch: int) -> tuple:
    """(row indices, step keys) of ``epoch``: shared, or one order and key per model."""
    if self.shared_data:
      return epoch_lib.epoch_order(feed, self.train_keys[0], epoch)
    orders = [epoch_lib.epoch_order(feed, k, epoch) for k in self.train_keys]
    return jnp.stack([idx for idx, _ in orders]), jnp.stack([key for _, key in orders])


def create(configs, *, num_train=None, num_classes: int = 10, members: int = 1) -> Group:
  """Initializes every model exactly as its single run would (key(seed) split
  into init / train keys), stacked under one model and optax chain."""
  configs = list(configs)
  if len(groups(configs)) != 1:
    raise ValueError('stacked.create needs configs with one signature; '
                     'split them with stacked.groups')
  ref = configs[0]
  steps = train_lib.steps_per_epoch(ref, num_train)
  by_seed, templates, train_keys = {}, [], []
  for c in configs:
    init_key, train_key = epoch_lib.run_keys(c.seed)
    if c.seed not in by_seed:  # model.init compiles: once per distinct seed
      by_seed[c.seed] = train_lib.create_train_state(c, init_key, num_train=num_train,
                                                     num_classes=num_classes)
      templates.append(by_seed[c.seed])
    else:  # same seed, same initial weights; this config's model and optimizer
      base, tx = by_seed[c.seed], optim.create_optimizer(c, steps)
      templates.append(base.replace(
          apply_fn=train_lib.ModelApply(train_lib.build_model(c, num_classes)), tx=tx,
          opt_state=tx.init(base.params)))
    train_keys.append(train_key)
  rates = [c.model.get('dropout_rate', 0.0) for c in configs]
  dropout_rate = (jnp.asarray(rates, jnp.float32)
                  if 'model.dropout_rate' in per_trial_keys(ref) and any(rates) else None)
  # One chain for the group: its structure is the members' (equal signatures; the
  # largest λ keeps the decay step if any member decays); η_k, β_k, λ_k are read
  # from each member's optimizer state, not from the chain.
  group_config = ref.copy_and_resolve_references()
  with group_config.unlocked():
    group_config.weight_decay = max(c.weight_decay for c in configs)
  tx = optim.create_optimizer(group_config, steps)
  state = templates[0].replace(
      params=_stack([t.params for t in templates]),
      batch_stats=_stack([t.batch_stats for t in templates]),
      ema=_stack([t.ema for t in templates]),
      opt_state=_stack([t.opt_state for t in templates]),  # each holds its η, β, λ
      apply_fn=train_lib.ModelApply(models.vmapped(templates[0].model)), tx=tx)
  return Group(configs, state, dropout_rate, train_keys, templates, members)


def train(configs, workdirs, *, on_epoch=None) -> list:
  """Trains ``configs`` (one signature: ``groups``) into ``workdirs``; per config an
  Outcome (``error`` set when its loss became non-finite). One config that is no
  ensemble is the trainer's. ``on_epoch(r, record) -> stop`` sees run r's records."""
  if len(configs) == 1 and ensemble.size(configs[0]) == 1:
    hook = None if on_epoch is None else functools.partial(on_epoch, 0)
    return [trainer.train_and_evaluate(configs[0], workdirs[0], on_epoch=hook)]
  if len(configs) > 1 and any(ensemble.size(c) > 1 for c in configs):
    raise UserError('ensembles (config.ensemble.size > 1) train one run at a time; '
                    'run the sweep without --vectorize')
  if len(groups(configs)) != 1:
    raise ValueError('stacked.train needs configs of one signature (stacked.groups)')
  start = time.time()
  configs, data, mesh = trainer.load(configs)
  set_up = time.time()
  ref, members = configs[0], ensemble.size(configs[0])
  with contextlib.ExitStack() as stack:
    for w in workdirs:
      workdir_lib.prepare(w)
      stack.enter_context(workdir_lib.lock(w))
    feed, data = epoch_lib.feed(ref, data, mesh)
    group = create(ensemble.member_configs(ref) if members > 1 else configs,
                   num_train=feed.num_train, num_classes=data.num_classes, members=members)
    runs = [workdir_lib.RunFiles.open(c, w) for c, w in zip(configs, workdirs)]
    resumed = [run.resume(group.run_state(r)) for r, run in enumerate(runs)]
    if len({run.epoch for run in runs}) > 1:
      raise UserError(f'runs {", ".join(workdirs)} hold checkpoints of different epochs '
                      f'{sorted({run.epoch for run in runs})}; resume each on its own '
                      '(without --vectorize)')
    group.state = parallel.replicate(group.stack_runs([s for s, _ in resumed]), mesh)
    best = [b for _, b in resumed]         # per run: its state at e* (None: none yet)
    for run in runs:
      run.begin()                          # decided: files change from here
    splits = trainer.every_epoch_splits(ref, data, mesh)
    options = train_lib.compiler_options(ref)
    eval_fn = evaluation.pass_fn(mesh, stacked=True, members=members, compiler_options=options)
    run_chunk = epoch_lib.chunk_fn(functools.partial(step, dropout_rate=group.dropout_rate),
                                   mesh, gather=feed.gather, mode=ref.loop_mode,
                                   per_model=not group.shared_data, compiler_options=options)
    trainer.log_start(ref, data, feed, mesh, group.state, group.size, runs[0],
                      time.time() - set_up)
    errors, ended, evals = [None] * len(runs), {}, None   # ended: run -> its stopped state
    try:
      for epoch in range(runs[0].epoch + 1, ref.num_epochs + 1):
        idx, rng = group.epoch_order(feed, epoch)
        group.state, train_metrics, seconds, finite = epoch_lib.train(
            run_chunk, group.state, feed, idx, rng, epoch=epoch,
            every=ref.log_every_steps, batch_size=ref.batch_size * group.size)
        eval_start = time.time()
        evals = {'train': _train_tree(train_metrics, members),
                 **evaluation.evaluate(eval_fn, group.state, splits)}
        eval_seconds = time.time() - eval_start
        for r, run in enumerate(runs):
          if errors[r] is not None or r in ended:
            continue
          mine = slice(r * members, (r + 1) * members)
          if not np.all(finite[mine]):
            bad = r * members + int(np.argmin(finite[mine]))
            errors[r] = UserError(_member(members, bad, group) + epoch_lib.nonfinite_error(
                group.configs[bad], epoch, train_metrics['loss'][bad]))
            continue
          record = trainer.epoch_record(epoch, _run_flat(evals, r, members), seconds,
                                        eval_seconds, feed.steps * ref.batch_size * members)
          state = group.run_state(r)
          improved = selection.improves(run.history, record, ref.model_weights)
          if improved:
            best[r] = trainer.snapshot(state)
          stop = bool(on_epoch is not None and on_epoch(r, record))
          run.record(record, state, improved=improved, stop=stop, label=_label(members, r,
                                                                                len(runs)))
          if stop:
            ended[r] = trainer.snapshot(state)
        if all(e is not None or r in ended for r, e in enumerate(errors)):
          break
    finally:
      for run in runs:
        run.close()
    return _finish(group, runs, data, mesh, eval_fn, splits, evals, best, ended, errors,
                   time.time() - start)


def _train_tree(metrics, members: int) -> dict:
  """The epoch's train metrics as an evaluation tree: per model, and per run its
  members' mean (M > 1)."""
  tree = {'model': {'raw': metrics}}
  if members > 1:
    tree['ensemble'] = {'raw': jax.tree_util.tree_map(
        lambda v: v.reshape(-1, members).mean(1), metrics)}
  return tree


def _run_flat(trees, r: int, members: int) -> dict:
  """Run r's record keys from the group's trees {split: {'model'[, 'ensemble']}}:
  its model's, or its ensemble's plus each member's under 'member<k>_'."""
  if members == 1:
    return writers.flatten({s: _pick(t['model'], r) for s, t in trees.items()})
  flat = writers.flatten({s: _pick(t['ensemble'], r) for s, t in trees.items()})
  for k in range(members):
    flat.update(writers.flatten({s: _pick(t['model'], r * members + k)
                                 for s, t in trees.items()}, prefix=f'member{k}_'))
  return flat


def _label(members: int, r: int, runs: int) -> str:
  """' (model r)' for vectorized trials, ' (ensemble of M)' for an ensemble."""
  return f' (ensemble of {members})' if members > 1 else f' (model {r})' if runs > 1 else ''


def _member(members: int, k: int, group) -> str:
  return f'ensemble member {k} (seed {group.configs[k].seed}): ' if members > 1 else ''


def _finish(group, runs, data, mesh, eval_fn, splits, evals, best, ended, errors,
            wall_s) -> list:
  """Each run's Outcome with its summary.json written: the test split read once,
  the last and the e* weights of every run in one pass each."""
  members, ref = group.members, group.configs[0]
  final = [ended.get(r, group.run_state(r)) for r in range(len(runs))]
  test, last, at_best = trainer.test_split(ref, data, mesh), {}, {}
  if test:
    last = evaluation.evaluate(eval_fn, group.stack_runs(final), test)
    at_best = last if all(b is None for b in best) else evaluation.evaluate(
        eval_fn, group.stack_runs([f if b is None else b for b, f in zip(best, final)]), test)
  if evals is None:   # a resumed run with no epoch left: its members' figures now
    evals = evaluation.evaluate(eval_fn, group.state, splits)
  outcomes = []
  for r, run in enumerate(runs):
    if errors[r] is not None:
      outcomes.append(trainer.Outcome(None, None, data, errors[r]))
      continue
    test_last = _run_flat(last, r, members) if test else None
    summary = summary_lib.summarize(
        run.config, run.history, trainer.num_params(group.templates[0]), mesh, wall_s,
        test_last=test_last, test_best=_run_flat(at_best, r, members) if test else None)
    summary['train_images_in_process'] = len(data.train_labels)
    if members == 1:
      summary['vectorized_trials'] = len(runs)
    else:
      summary['ensemble'] = _ensemble_block(group, {**evals, **last})
    if r in ended:
      summary['stopped_early'] = True
    run.write_summary(summary)
    value = final[r] if members == 1 else ensemble.from_state(final[r])
    outcomes.append(trainer.Outcome(summary, value, data))
  return outcomes


def _ensemble_block(group, trees) -> dict:
  """summary.json's 'ensemble': size, seeds, each member's final val and test
  metrics and their mean, beside the ensemble's own (the summary's top level)."""
  splits = {s: t for s, t in trees.items() if s != 'train'}
  members = [{'seed': int(c.seed),
              **writers.flatten({s: _pick(t['model'], k) for s, t in splits.items()})}
             for k, c in enumerate(group.configs)]
  keys = sorted(set(members[0]) - {'seed'})
  return {'size': group.members, 'seeds': [m['seed'] for m in members], 'members': members,
          'member_mean': {key: float(np.mean([m[key] for m in members])) for key in keys},
          'prediction': "mean of the members' class distributions q (train.probabilities)"}
