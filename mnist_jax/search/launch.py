"""What one ``python -m mnist_jax.sweep`` process does, behind its flags.

There is one search engine, the Optuna study of search/study.py, with one queue
and one table (search/study_table.py). Every way of running a sweep is a way of
taking trials from that queue:

  (default)           pop queued trials until none is left (``--worker``) or until
                      the whole study has ended (retrying dead workers' trials)
  --trial=N           run queued trial N only (``worker.run_trial``): the N-th line
                      of ``--list``, for schedulers that hand one index to each
                      task (SLURM array jobs, Kubernetes indexed jobs)
  --vectorize         pop every queued trial at once and train those of one
                      architecture as one vmapped group: --vectorize_trials=<all>
  --vectorize_trials=K  pop up to K at once, the same way

The study lives in WORKDIR/study.db unless ``storage`` names another, so a
``--trial=N`` process and a worker on the same flags share one queue and one
table; each rewrites WORKDIR/results.{csv,md} after its trials.
"""
import dataclasses
import json
import os
from typing import Optional

from mnist_jax.errors import UserError
from mnist_jax.search import hyper, storage as storage_lib, study, study_table, worker


@dataclasses.dataclass(frozen=True)
class Options:
  """The command's flags (see mnist_jax/sweep.py)."""
  workdir: str = ''
  storage: str = ''
  study_name: str = ''
  sampler: str = 'grid'
  pruner: str = 'none'
  n_trials: int = 0
  seed: int = 0
  worker: bool = False
  vectorize: bool = False
  vectorize_trials: int = 1
  trial: Optional[int] = None
  heartbeat_s: int = 30
  grace_s: int = 120


def search_of(config_path: str, config, options: Options) -> study.Search:
  """The study's Search: get_hyper of the config file over ``config`` (the
  command line's --config overrides applied); an unknown key, sampler or pruner
  is a UserError here, before anything is written."""
  path = config_path.split(':')[0]
  trials = hyper.load(config_path)
  for t in trials:
    hyper.apply(config, t)
  search = study.Search(
      name=options.study_name or os.path.splitext(os.path.basename(path))[0], trials=trials,
      config=config, sampler=options.sampler, pruner=options.pruner,
      n_trials=options.n_trials, seed=options.seed, source=path)
  study.check(search)
  if options.vectorize_trials < 1:
    raise UserError(f'--vectorize_trials={options.vectorize_trials}; pass 1 (one trial at '
                    'a time) or more')
  return search


def listing(search: study.Search) -> list:
  """The queue, one line per trial: 'N<tab>name<tab>overrides' (``--trial=N``
  runs line N); a drawing sampler's trials draw their values when popped."""
  if search.sampler != 'grid':
    return [f'{n}\t(drawn from the space by --sampler={search.sampler} when run)'
            for n in range(search.size)]
  return [f'{n}\t{hyper.trial_name(search.trials[i])}\t'
          f'{json.dumps(search.trials[i], sort_keys=True, default=str)}'
          for n, i in enumerate(study.grid_order(len(search.trials), search.seed))]


def run(search: study.Search, options: Options, on_trained=None) -> tuple:
  """Opens (or makes) the study and runs this process's trials: ([(name, error or
  None)], the table's path, a line saying where the study is)."""
  workdir = options.workdir
  if not workdir:
    raise UserError('the sweep needs --workdir; pass the folder for its trials')
  if options.trial is not None:
    study.check_trial(search, options.trial)    # before anything is written
  if not options.storage:
    os.makedirs(workdir, exist_ok=True)      # the SQLite study.db lives there
  url = storage_lib.url_for(workdir, options.storage)
  store = storage_lib.open_storage(url, options.heartbeat_s, options.grace_s)
  study.open_study(store, search, storage_lib.redact(url))
  write = lambda: study_table.write(store, search.name, workdir)
  if options.trial is not None:
    ran = worker.run_trial(store, search, workdir, options.trial, on_trained=on_trained)
  else:
    ran = worker.work(store, search, workdir, wait=not options.worker, on_trained=on_trained,
                     after_each=write,
                     vectorize=search.size if options.vectorize else options.vectorize_trials)
  table = write()
  board = url[len(storage_lib.JOURNAL):] if url.startswith(storage_lib.JOURNAL) \
      else storage_lib.redact(url)
  where = (f'study {search.name} in {storage_lib.redact(url)}; dashboard: '
           f'optuna-dashboard {board}')
  return [(f'trial {n} ({state})', error) for n, state, error in ran], table, where


def report(ran: list, table: str) -> tuple:
  """(the lines that sum up a run, whether every trial it ran succeeded)."""
  failed = [name for name, error in ran if error is not None]
  lines = [f'ran {len(ran)} trial(s), {len(failed)} failed; results: {table}']
  lines += [f'  {name}: {error}' for name, error in ran if error is not None]
  return lines, not failed

