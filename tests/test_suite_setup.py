"""The test suite's own machinery: what its speed relies on.

Modules whose tests share an expensive module fixture (a trained run) are one
``xdist_group``, so pytest-xdist's ``--dist loadgroup`` (setup.cfg) runs them on
one worker and the fixture is built once. pytest 9.2 silently broke that
grouping (pytest-xdist#1386: the group is added to the node id, which pytest 9.2
no longer lets a plugin change), so every such fixture was built once per worker;
setup.cfg caps pytest below 9.2 and this test catches the next such break.
"""
import os
import subprocess
import sys

TOY = '''
import os, pytest
pytestmark = pytest.mark.xdist_group('g')

@pytest.fixture(scope='module')
def built():
  with open(os.environ['BUILDS'], 'a') as f:
    f.write(f'{os.getpid()}\\n')

def test_1(built): pass
def test_2(built): pass
def test_3(built): pass
def test_4(built): pass
'''


def test_an_xdist_group_runs_on_one_worker_and_builds_its_fixture_once(tmp_path):
  (tmp_path / 'test_toy.py').write_text(TOY)
  (tmp_path / 'test_other.py').write_text('def test_x(): pass\ndef test_y(): pass\n')
  builds = tmp_path / 'builds.txt'
  out = subprocess.run([sys.executable, '-m', 'pytest', '-q', '-n', '2', '--dist', 'loadgroup',
                        '-p', 'no:cacheprovider', '-c', os.devnull, str(tmp_path)],
                       cwd=tmp_path, capture_output=True, text=True, timeout=120,
                       env={**os.environ, 'BUILDS': str(builds)})
  assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
  assert len(builds.read_text().splitlines()) == 1, (
      'the xdist_group ran on several workers: pytest-xdist\'s --dist loadgroup does not '
      'work with this pytest (pytest-xdist#1386); install pytest<9.2')
