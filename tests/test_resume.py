"""Training that survives SIGKILL: tools/train.py --resume on the demo config.

One uninterrupted run and one run killed with SIGKILL after its second
checkpoint are shared by the tests (module fixtures); each resume works on
its own copy of the killed run's folder. Random augmentation is off
(tests/configs/demo_crash.py), so the resumed losses must equal the
uninterrupted run's.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest
import torch
from helpers import REPO
from torch import nn

from ms_rcnn_mm.compat import (TRUST_ENV, UntrustedCheckpointError,
                               load_local_checkpoint)
from ms_rcnn_mm.datasets import generate
from ms_rcnn_mm.demo import data_options
from ms_rcnn_mm.engine import (newest_complete_checkpoint,
                               save_checkpoint_atomically)
from ms_rcnn_mm.engine.checkpoint import RNG_KEY

CONFIG = REPO / 'tests' / 'configs' / 'demo_crash.py'
TRAIN = REPO / 'tools' / 'train.py'
NUM_TRAIN = 16  # 8 iterations of 2 images: no epoch ends in the run
IMAGE_SIZE = 128
ITERS = 6
CHECKPOINT_INTERVAL = 2
KILLED_AFTER = 5  # iterations done when killed; iter_2, iter_4 written
TOLERANCE = 1e-5
TIMEOUT_S = 600
LOSS_KEYS = ('loss', 'loss_rpn_cls', 'loss_rpn_bbox', 'loss_cls',
             'loss_bbox', 'loss_mask', 'loss_mask_iou')


def options(data: Path) -> List[str]:
    return [
        '--cfg-options', *data_options(str(data)),
        f'train_cfg.max_iters={ITERS}', f'train_cfg.val_interval={ITERS + 1}',
        'param_scheduler.0.end=2', 'param_scheduler.1.begin=2',
        f'param_scheduler.1.end={ITERS}', 'train_dataloader.batch_size=2',
        f'default_hooks.checkpoint.interval={CHECKPOINT_INTERVAL}',
        'default_hooks.logger.interval=1', 'randomness.seed=0'
    ]


def train(work: Path, data: Path, *extra: str,
          kill_before: int = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS='1', CUDA_VISIBLE_DEVICES='',
               PYTHONPATH=os.pathsep.join(
                   [str(REPO / 'tests'), os.environ.get('PYTHONPATH', '')]))
    env.pop('KILL_BEFORE_ITER', None)
    if kill_before is not None:
        env['KILL_BEFORE_ITER'] = str(kill_before)
    return subprocess.run(
        [sys.executable, str(TRAIN), str(CONFIG), '--work-dir', str(work),
         *extra, *options(data)],
        env=env, capture_output=True, text=True, timeout=TIMEOUT_S)


def train_ok(work: Path, data: Path, *extra: str) -> None:
    out = train(work, data, *extra)
    assert out.returncode == 0, out.stderr[-4000:]


def losses(work: Path, run: int = -1) -> Dict[int, dict]:
    """Logged losses by iteration of the ``run``-th run in ``work``."""
    runs = sorted(work.glob('*/vis_data/scalars.json'))
    rows = [json.loads(line) for line in runs[run].read_text().splitlines()]
    return {row['iter']: {k: row[k] for k in LOSS_KEYS}
            for row in rows if 'loss' in row}


def assert_same_losses(ours: Dict[int, dict], ref: Dict[int, dict],
                       iters) -> None:
    assert sorted(ours) == list(iters)
    for it in iters:
        for key in LOSS_KEYS:
            assert ours[it][key] == pytest.approx(ref[it][key],
                                                  abs=TOLERANCE), (it, key)


@pytest.fixture(scope='module')
def data(tmp_path_factory) -> Path:
    return generate(str(tmp_path_factory.mktemp('data')), num_train=NUM_TRAIN,
                    num_val=2, size=IMAGE_SIZE)


@pytest.fixture(scope='module')
def straight(tmp_path_factory, data) -> Path:
    work = tmp_path_factory.mktemp('straight')
    train_ok(work, data)
    return work


@pytest.fixture(scope='module')
def killed(tmp_path_factory, data) -> Path:
    work = tmp_path_factory.mktemp('killed')
    out = train(work, data, kill_before=KILLED_AFTER)
    assert out.returncode == -signal.SIGKILL, out.stderr[-4000:]
    return work


def copy_of(killed: Path, tmp_path: Path) -> Path:
    """A copy of the killed run's folder whose ``last_checkpoint`` names
    the copy's own newest checkpoint (mmengine writes absolute paths)."""
    work = tmp_path / 'work'
    shutil.copytree(killed, work)
    last = Path((work / 'last_checkpoint').read_text())
    (work / 'last_checkpoint').write_text(str(work / last.name))
    return work


def test_killed_run_left_complete_checkpoints(killed):
    names = sorted(p.name for p in killed.iterdir()
                   if p.is_file() and p.suffix != '.py')  # not the config
    assert names == ['iter_2.pth', 'iter_4.pth', 'last_checkpoint']
    assert (killed / 'last_checkpoint').read_text().endswith('iter_4.pth')
    assert sorted(losses(killed)) == list(range(1, KILLED_AFTER + 1))


def test_resume_after_sigkill_matches_uninterrupted_run(
        straight, killed, data, tmp_path):
    work = copy_of(killed, tmp_path)
    train_ok(work, data, '--resume')
    assert_same_losses(losses(work), losses(straight),
                       range(KILLED_AFTER, ITERS + 1))
    ours = load_local_checkpoint(str(work / f'iter_{ITERS}.pth'))
    ref = load_local_checkpoint(str(straight / f'iter_{ITERS}.pth'))
    assert ours['meta']['iter'] == ref['meta']['iter'] == ITERS
    for key, value in ref['state_dict'].items():
        torch.testing.assert_close(ours['state_dict'][key], value,
                                   atol=TOLERANCE, rtol=0)
    assert ours['param_schedulers'] == ref['param_schedulers']
    assert ours['optimizer']['param_groups'] == ref['optimizer'][
        'param_groups']
    step = [s['step'] for s in ours['optimizer']['state'].values()]
    assert {float(s) for s in step} == {float(ITERS)}
    assert RNG_KEY in ours['meta']


def test_truncated_newest_checkpoint_falls_back_to_previous(
        straight, killed, data, tmp_path):
    work = copy_of(killed, tmp_path)
    newest = work / 'iter_4.pth'
    newest.write_bytes(newest.read_bytes()[:newest.stat().st_size // 3])
    out = train(work, data, '--resume')
    assert out.returncode == 0, out.stderr[-4000:]
    log = out.stdout + out.stderr
    assert f'skipping {newest}' in log and 'truncated or corrupt' in log
    # iterations 3 to 6 again, from iter_2.pth, as the uninterrupted run
    assert_same_losses(losses(work), losses(straight), range(3, ITERS + 1))


def test_every_checkpoint_truncated_stops_with_their_names(killed, data,
                                                           tmp_path):
    work = copy_of(killed, tmp_path)
    for name in ('iter_2.pth', 'iter_4.pth'):
        path = work / name
        path.write_bytes(path.read_bytes()[:100])
    out = train(work, data, '--resume')
    assert out.returncode != 0
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith('ms_rcnn_mm.compat.CheckpointError'), last
    assert str(work / 'iter_4.pth') in last and str(work / 'iter_2.pth') in \
        last


def test_atomic_save_leaves_old_file_when_writing_dies(tmp_path,
                                                       monkeypatch):
    path = tmp_path / 'iter_2.pth'
    save_checkpoint_atomically({'meta': {'iter': 1}}, str(path))

    def die_half_way(obj, f, *args, **kwargs):
        f.write(b'PK\x03\x04 partial')
        raise KeyboardInterrupt  # as a signal arriving mid-write

    monkeypatch.setattr(torch, 'save', die_half_way)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint_atomically({'meta': {'iter': 2}}, str(path))
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ['iter_2.pth']
    assert load_local_checkpoint(str(path))['meta']['iter'] == 1


class Arbitrary:
    """Not on the allow-list."""


def test_untrusted_newest_checkpoint_is_not_skipped(tmp_path, monkeypatch):
    """A refused checkpoint is the user's decision, not a corrupt file."""
    monkeypatch.delenv(TRUST_ENV, raising=False)
    torch.save({'meta': {'iter': 2}}, tmp_path / 'iter_2.pth')
    torch.save({'meta': {'iter': 4}, 'x': Arbitrary()},
               tmp_path / 'iter_4.pth')
    with pytest.raises(UntrustedCheckpointError, match=TRUST_ENV) as err:
        newest_complete_checkpoint(str(tmp_path))
    assert str(tmp_path / 'iter_4.pth') in str(err.value)
    monkeypatch.setenv(TRUST_ENV, str(tmp_path / 'iter_4.pth'))
    assert newest_complete_checkpoint(str(tmp_path)) == str(
        tmp_path / 'iter_4.pth')


def test_mmdet_model_zoo_checkpoint_loads_without_opting_in(tmp_path,
                                                            monkeypatch):
    """What mmdet's model-zoo files hold (2.x and 3.x releases): tensors in
    an OrderedDict and a meta of plain Python values."""
    monkeypatch.delenv(TRUST_ENV, raising=False)
    weights = OrderedDict(
        (k, v) for k, v in nn.Linear(3, 2).state_dict().items())
    zoo = dict(
        meta=dict(mmdet_version='2.14.0', CLASSES=('person', 'car'),
                  env_info='sys.platform: linux', config='model = dict()',
                  epoch=12, iter=87960, mmcv_version='1.3.8',
                  time='Fri Jun 25 12:00:00 2021',
                  hook_msgs=dict(last_ckpt='epoch_12.pth'),
                  dataset_meta=dict(classes=('person', 'car'))),
        state_dict=weights)
    path = tmp_path / 'ms_rcnn_zoo.pth'
    torch.save(zoo, path)
    loaded = load_local_checkpoint(str(path))
    assert loaded['meta']['CLASSES'] == ('person', 'car')
    for key, value in weights.items():
        assert torch.equal(loaded['state_dict'][key], value)


@pytest.mark.cuda
def test_amp_trains_on_a_gpu(data, tmp_path):
    out = subprocess.run(
        [sys.executable, str(TRAIN), str(CONFIG), '--amp', '--work-dir',
         str(tmp_path), *options(data), 'train_cfg.max_iters=2'],
        capture_output=True, text=True, timeout=TIMEOUT_S)
    assert out.returncode == 0, out.stderr[-4000:]
    assert sorted(losses(tmp_path)) == [1, 2]
    assert all(np.isfinite(v) for row in losses(tmp_path).values()
               for v in row.values())
