"""scripts/gpu_check.sh without a GPU: its arguments, its step runner's
budget and time limits, and every step run end to end on the CPU at toy
sizes (``--smoke``), down to the JSON file and the markdown tables."""
import json
import os
import subprocess
import sys
import time

import pytest
from helpers import REPO

from ms_rcnn_mm.analysis import gpu_check
from ms_rcnn_mm.analysis.gpu_check import (JSON_NAME, MARKDOWN_NAME,
                                           STEP_NAMES, Step, parse_args,
                                           run_step)

SCRIPT = REPO / 'scripts' / 'gpu_check.sh'
#: generous: the smoke run trains and times R-50 models on a shared CPU
SMOKE_TIMEOUT_S = 1500


def test_output_folder_comes_from_out_then_the_default(monkeypatch):
    """``--out``, else ``$OUT`` (the device machine's), else the default;
    catches an ``$OUT`` that is ignored."""
    monkeypatch.setenv('OUT', '/tmp/out_of_the_device')
    assert parse_args([]).out == '/tmp/out_of_the_device'
    assert parse_args(['--out', 'elsewhere']).out == 'elsewhere'
    monkeypatch.delenv('OUT')
    assert parse_args([]).out == 'work_dirs/gpu_check'
    assert parse_args([]).steps == list(STEP_NAMES)


@pytest.mark.parametrize('argv,message', [
    (['--budget-s', '0'], '--budget-s must be positive, got 0.0'),
    (['--speed-config', 'configs/no_such.py'],
     '--speed-config: no such file: configs/no_such.py'),
    (['--steps', 'speed', 'sped'], "invalid choice: 'sped'"),
])
def test_bad_arguments_are_named(argv, message, capsys):
    """Each bad argument stops the check before any step, naming the value;
    catches a check that starts with a config that does not exist."""
    with pytest.raises(SystemExit) as err:
        parse_args(argv)
    assert err.value.code == 2
    assert message in capsys.readouterr().err


def test_gpu_run_without_a_gpu_stops_at_once(tmp_path):
    """Without ``--smoke`` a machine without CUDA gets a message, no
    report, and a non-zero exit (torch here is a CPU build); catches a GPU
    check that would time CPU runs as GPU numbers."""
    out = subprocess.run(
        [sys.executable, '-m', 'ms_rcnn_mm.analysis.gpu_check', '--out',
         str(tmp_path)], capture_output=True, text=True, cwd=REPO)
    assert out.returncode != 0
    assert 'sees no CUDA device' in out.stderr and '--smoke' in out.stderr
    assert not (tmp_path / JSON_NAME).exists()


def python_step(name: str, code: str, timeout_s: int = 60,
                collect=dict) -> Step:
    return Step(name, [sys.executable, '-c', code], timeout_s, collect)


def test_steps_report_failure_timeout_and_a_spent_budget(tmp_path):
    """A failing command, one past its limit (killed within a second or two
    of it, children included), one whose result cannot be read, and one
    that finds too little budget left: each is recorded as such. Catches a
    runner that waits past the limit, leaves children running, or records
    a failed step as passed."""
    deadline = time.monotonic() + 120
    failed = run_step(python_step('bad', 'raise SystemExit("no GPU 7")'),
                      tmp_path, deadline)
    assert (failed.status, failed.reason) == ('failed',
                                              'exit status 1: no GPU 7')
    start = time.monotonic()
    slow = run_step(python_step(
        'slow', 'import subprocess, sys, time; '
        'subprocess.Popen([sys.executable, "-c", "import time; '
        'time.sleep(60)"]); time.sleep(60)', timeout_s=2), tmp_path,
        deadline)
    assert slow.status == 'timeout' and time.monotonic() - start < 10
    unreadable = run_step(python_step(
        'unreadable', 'print(1)', collect=lambda: json.loads('')), tmp_path,
        deadline)
    assert unreadable.status == 'failed'
    assert unreadable.reason.startswith('JSONDecodeError')
    late = run_step(python_step('late', 'print(1)'), tmp_path,
                    time.monotonic() + gpu_check.MIN_STEP_S - 1)
    assert late.status == 'not run' and 'of the budget left' in late.reason
    ok = run_step(python_step('ok', 'print("hello")',
                              collect=lambda: dict(x=1)), tmp_path, deadline)
    assert (ok.status, ok.result) == ('passed', dict(x=1))
    assert (tmp_path / 'ok.log').read_text() == 'hello\n'


@pytest.fixture(scope='module')
def smoke_run(tmp_path_factory):
    """``scripts/gpu_check.sh OUT --smoke`` with the test's Python."""
    out = tmp_path_factory.mktemp('gpu_check')
    env = dict(os.environ, GPU_CHECK_PYTHON=sys.executable,
               OMP_NUM_THREADS='1', CUDA_VISIBLE_DEVICES='')
    env.pop('OUT', None)
    proc = subprocess.run(
        ['bash', str(SCRIPT), str(out), '--smoke', '--budget-s',
         str(SMOKE_TIMEOUT_S)], env=env, capture_output=True, text=True,
        timeout=SMOKE_TIMEOUT_S + 60)
    return proc, out


def test_smoke_run_passes_every_step_and_writes_both_files(smoke_run):
    """The shell script with the test's Python runs every step on the CPU;
    catches a step whose command or config is broken."""
    proc, out = smoke_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((out / JSON_NAME).read_text())
    status = {s['name']: s['status'] for s in report['steps']}
    assert status == dict(cuda_tests='passed', targets='passed',
                          speed='passed', speed_amp='skipped',
                          train_amp='passed')
    assert report['smoke'] is True and report['seconds'] > 0
    for step in report['steps']:
        assert os.path.isfile(step['log']) or step['status'] == 'skipped'


def test_smoke_run_results_hold_the_numbers_of_each_step(smoke_run):
    """The CUDA tests are collected and all skipped here; the targets agree
    with mmdet's; the speed step times the three models; the two training
    iterations give finite losses and a checkpoint with one rank's random
    state and no GPU's. Catches a step whose result file is not the one its
    command writes."""
    _, out = smoke_run
    steps = {s['name']: s['result']
             for s in json.loads((out / JSON_NAME).read_text())['steps']}
    tests = steps['cuda_tests']
    assert tests['tests'] >= 3 and tests['skipped'] == tests['tests']
    assert tests['failed'] == []
    assert steps['targets']['max_abs_diff'] < 1e-4
    assert steps['targets']['host_path'] == 'compiled kernel'
    speed = steps['speed']['results'][0]
    assert sorted(speed['train_ms']) == ['mask_rcnn', 'mmdet_ms_rcnn',
                                         'ms_rcnn_mm']
    assert all(v > 0 for v in speed['infer_ms'].values())
    train = steps['train_amp']
    assert train['iterations'] == [1, 2] and train['finite']
    assert (train['rng_ranks'], train['rng_gpus']) == (1, 0)


def test_smoke_run_markdown_has_a_row_per_step_and_model(smoke_run):
    """The markdown holds a row per step and per timed model; catches a
    writer that drops a section."""
    _, out = smoke_run
    text = (out / MARKDOWN_NAME).read_text()
    assert text.startswith('# GPU check (smoke run on the CPU)')
    for name in STEP_NAMES:
        assert f'| {name} |' in text
    assert '| speed_amp | skipped | 0 | --amp needs CUDA |' in text
    for model in ('mask_rcnn', 'ms_rcnn_mm', 'mmdet_ms_rcnn'):
        assert f'| ms-rcnn-mm_r50_fpn_1x_coco.py | no | {model} |' in text
    for model in ('mask_rcnn', 'ms_rcnn_mm'):  # mmdet has no cascade MS
        assert f'| cascade-ms-rcnn_r50_fpn_1x_coco.py | no | {model} |' \
            in text
    assert '## train_amp' in text and '| 2 |' in text
