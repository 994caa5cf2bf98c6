"""scripts/bootstrap.sh stops with a clear message when something is missing
(each case stops before anything is installed)."""
import os
import shutil
import subprocess
import sys

from helpers import REPO

SCRIPT = REPO / 'scripts' / 'bootstrap.sh'


def bootstrap(tmp_path, python, path=None):
    env = dict(os.environ, PYTHON=str(python), VENV=str(tmp_path / 'venv'))
    if path is not None:
        env['PATH'] = path
    return subprocess.run([shutil.which('bash'), str(SCRIPT)],
                          capture_output=True, text=True, env=env)


def test_missing_python(tmp_path):
    out = bootstrap(tmp_path, tmp_path / 'no-such-python')
    assert out.returncode == 1
    assert 'no-such-python not found' in out.stderr
    assert not (tmp_path / 'venv').exists()


def test_too_old_python(tmp_path):
    fake = tmp_path / 'python3.9'
    fake.write_text('#!/bin/sh\n'
                    'case "$*" in *-V*) echo "Python 3.9.18";; '
                    '*) exit 1;; esac\n')
    fake.chmod(0o755)
    out = bootstrap(tmp_path, fake)
    assert out.returncode == 1
    assert 'Python 3.9.18 found, but Python 3.10-3.12 is required' in (
        out.stderr)


def test_missing_compiler(tmp_path):
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    for tool in ('sha256sum', 'cat', 'cut', 'dirname'):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    (bin_dir / 'python3').symlink_to(sys.executable)
    out = bootstrap(tmp_path, 'python3', path=str(bin_dir))
    assert out.returncode == 1
    assert 'no C++ compiler' in out.stderr
    assert not (tmp_path / 'venv').exists()
