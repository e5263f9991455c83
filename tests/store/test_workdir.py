"""The run directory holds one process at a time: the lock (store/workdir.py), taken
by the trainer and by the command, refuses a second process with one line that names
the holder and changes nothing."""
import json
import os
import subprocess
import sys
import textwrap
import time

import pytest

from mnist_jax.engine import trainer
from mnist_jax.store import workdir as workdir_lib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _one_epoch(config):
  config.data.train_limit, config.num_epochs = 200, 1
  return config


def test_a_second_process_on_a_workdir_is_refused(tmp_path, small_config):
  workdir = tmp_path / 'busy'
  workdir.mkdir()
  holder = subprocess.Popen([sys.executable, '-c', textwrap.dedent(f'''
      import time
      from mnist_jax.store import workdir
      with workdir.lock({str(workdir)!r}):
        workdir.claim({str(workdir)!r})
        print('locked', flush=True)
        time.sleep(60)''')], stdout=subprocess.PIPE, text=True, cwd=ROOT)
  try:
    assert holder.stdout.readline().strip() == 'locked'
    with pytest.raises(workdir_lib.WorkdirBusy, match=f'pid {holder.pid}'):
      trainer.train_and_evaluate(_one_epoch(small_config), str(workdir))
    assert not (workdir / 'metrics.jsonl').exists()
  finally:
    holder.kill()
    holder.wait()
  summary = trainer.train_and_evaluate(_one_epoch(small_config), str(workdir)).summary  # free again
  assert summary['epochs'] == 1


def test_two_cli_processes_on_one_workdir_train_once(tmp_path, mnist_small_dir):
  workdir = str(tmp_path / 'twice')
  args = [sys.executable, '-m', 'mnist_jax.main', '--config=configs/lenet.py',
          f'--workdir={workdir}', '--config.data.source=idx',
          f'--config.data.data_dir={mnist_small_dir}', '--config.data.val_size=500',
          '--config.data.train_limit=1000', '--config.num_epochs=2',
          '--config.write_plots=False']
  first = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)
  deadline = time.time() + 60
  while not os.path.exists(os.path.join(workdir, '.lock')) and time.time() < deadline:
    time.sleep(0.05)
  second = subprocess.run(args, cwd=ROOT, capture_output=True, text=True)
  first.communicate(timeout=300)
  assert first.returncode == 0
  if second.returncode == 0:   # the first finished before the second started: rerun is a no-op
    pytest.fail('the second process did not meet the first one; make the run longer')
  assert second.returncode == 2
  err = second.stderr.strip().splitlines()
  assert err[-1].startswith('error: workdir') and 'in use by pid' in err[-1]
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    assert [json.loads(line)['epoch'] for line in f] == [1, 2]
