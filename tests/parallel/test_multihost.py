"""Multi-host: 2 processes x 4 CPU devices train exactly like 1 process x 8,
each process holding only its half of the training set."""
import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest

from mnist_jax.parallel import distributed
from mnist_jax.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SCRIPT = '''
import json, sys
from mnist_jax.parallel import distributed
address, count, index, workdir = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
if count > 1:
  assert distributed.initialize(address, count, index)
import jax
from mnist_jax.config import defaults
from mnist_jax.engine import trainer
assert jax.device_count() == 8, jax.devices()
c = defaults.get_config()
c.model.name = 'mlp'   # the model does not matter here; it compiles fast
c.data.source = 'idx'; c.data.data_dir = {data!r}; c.data.download = False
c.data.val_size = 500; c.data.train_limit = 640; c.batch_size = 64
c.eval_batch_size = 200; c.num_epochs = 2; c.log_every_steps = 5
c.optimizer = 'momentum'; c.learning_rate = 0.05; c.write_plots = False
c.data.per_device_shards = True   # what every multi-host run does (parallel/shards.py)
print('SUMMARY', json.dumps(trainer.train_and_evaluate(c, workdir).summary))
'''


def test_settings_from_flags_environment_or_cluster():
  assert distributed.settings(environ={}) is None
  assert distributed.settings('10.0.0.1:1234', 2, 1, environ={}) == {
      'coordinator_address': '10.0.0.1:1234', 'num_processes': 2, 'process_id': 1}
  env = {'JAX_COORDINATOR_ADDRESS': 'h:1', 'JAX_NUM_PROCESSES': '4', 'JAX_PROCESS_ID': '3'}
  assert distributed.settings(environ=env)['process_id'] == 3
  assert distributed.settings(environ={'SLURM_NTASKS': '2'}) == {}
  assert distributed.settings(environ={'SLURM_NTASKS': '1'}) is None
  with pytest.raises(UserError, match='lack num_processes, process_id'):
    distributed.settings('h:1', environ={})
  with pytest.raises(UserError, match='not in 0..1'):
    distributed.settings('h:1', 2, 2, environ={})
  with pytest.raises(UserError, match='HOST:PORT'):
    distributed.settings('h', 2, 0, environ={})


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _launch(tmp_path, data, workdir, count, env, port):
  script = tmp_path / 'run.py'
  script.write_text(textwrap.dedent(SCRIPT.format(data=data)))
  return [subprocess.Popen([sys.executable, str(script), f'127.0.0.1:{port}', str(count),
                            str(i), str(workdir)], cwd=ROOT, env=env, text=True,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
          for i in range(count)]


def _summary(proc) -> dict:
  out, err = proc.communicate(timeout=600)
  assert proc.returncode == 0, err[-3000:]
  return json.loads(next(l for l in out.splitlines() if l.startswith('SUMMARY'))[8:])


def test_two_processes_match_one_process_with_eight_devices(tmp_path, mnist_small_dir,
                                                           cpu_devices_env):
  multi = _launch(tmp_path, mnist_small_dir, tmp_path / 'multi', 2, cpu_devices_env(4),
                  _free_port())
  single = _launch(tmp_path, mnist_small_dir, tmp_path / 'single', 1, cpu_devices_env(8), 0)
  want = _summary(single[0])
  got = [_summary(p) for p in multi]
  for key in ('test_loss', 'val_loss', 'test_accuracy', 'best_val_accuracy'):
    assert got[0][key] == pytest.approx(want[key], abs=1e-5), key
    assert got[1][key] == got[0][key], key
  assert want['devices'].startswith('8 x') and got[0]['devices'].startswith('8 x')
  assert want['train_images_in_process'] == 640
  assert [g['train_images_in_process'] for g in got] == [320, 320]
  with open(tmp_path / 'multi' / 'metrics.jsonl') as f:  # process 0 alone wrote it
    assert [json.loads(l)['epoch'] for l in f] == [1, 2]
  assert sorted(os.listdir(tmp_path / 'multi' / 'checkpoints' / 'latest')) == ['1', '2']
