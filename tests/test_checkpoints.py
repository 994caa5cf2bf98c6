"""Checkpoints from elsewhere and for a group: NumPy 1.x pickles on the
allow-list (and nothing else), file modes under the umask, the folder
flushed after the rename, and torch's random state per rank and per GPU."""
import json
import os
import stat
import subprocess
import sys
import zipfile
from collections import OrderedDict
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from helpers import REPO
from mmengine.logging import HistoryBuffer

from ms_rcnn_mm.compat import (TRUST_ENV, UntrustedCheckpointError,
                               load_local_checkpoint)
from ms_rcnn_mm.engine import checkpoint as engine_checkpoint
from ms_rcnn_mm.engine import save_checkpoint_atomically
from ms_rcnn_mm.engine.checkpoint import RNG_KEY, ResumeCheckHook

#: NumPy 2.x's and 1.x's name of the module of the array reconstructors,
#: as they stand in a pickle's GLOBAL opcodes (protocol 2: module and name
#: on lines of their own)
NUMPY_2_MODULE = b'numpy._core.multiarray\n'
NUMPY_1_MODULE = b'numpy.core.multiarray\n'
RECONSTRUCT = b'_reconstruct\n'
RANK_PROBE = REPO / 'tests' / 'rank_rng_probe.py'


def mmengine_like_checkpoint() -> dict:
    """Weights, a message hub with a HistoryBuffer and NumPy values in the
    meta, as mmengine's CheckpointHook writes them."""
    return dict(
        state_dict=OrderedDict(weight=torch.arange(6.).reshape(2, 3)),
        message_hub=dict(log_scalars={
            'train/loss': HistoryBuffer(np.array([0.5, 0.25]), np.ones(2))
        }),
        meta=dict(iter=2, lr=np.float64(0.02), steps=np.arange(3)))


def rewrite_pickle(path: Path, old: bytes, new: bytes) -> bytes:
    """Replace ``old`` by ``new`` in the pickle of the torch.save archive
    at ``path``; returns the new pickle."""
    with zipfile.ZipFile(path) as archive:
        entries = [(info, archive.read(info)) for info in archive.infolist()]
    with zipfile.ZipFile(path, 'w') as archive:
        for info, data in entries:
            if info.filename.endswith('/data.pkl'):
                assert old in data, 'the pickle does not name ' + repr(old)
                data = pickled = data.replace(old, new)
            archive.writestr(info, data)
    return pickled


def numpy_1_checkpoint(path: Path) -> bytes:
    """:func:`mmengine_like_checkpoint` as NumPy 1.x pickles it (its GLOBALs
    name ``numpy.core.multiarray``); returns the pickle."""
    torch.save(mmengine_like_checkpoint(), path)
    return rewrite_pickle(path, NUMPY_2_MODULE, NUMPY_1_MODULE)


def test_numpy_1_checkpoint_loads_safely(tmp_path, monkeypatch):
    """A checkpoint whose pickle names ``numpy.core.multiarray`` (arrays and
    scalars) loads with the safe loader, values intact; catches an
    allow-list with NumPy 2.x names only (issue 17: refused)."""
    monkeypatch.delenv(TRUST_ENV, raising=False)
    path = tmp_path / 'numpy1.pth'
    pickled = numpy_1_checkpoint(path)
    assert NUMPY_1_MODULE + RECONSTRUCT in pickled
    assert NUMPY_1_MODULE + b'scalar\n' in pickled
    assert b'numpy._core' not in pickled
    loaded = load_local_checkpoint(str(path))
    assert loaded['meta']['lr'] == 0.02
    np.testing.assert_array_equal(loaded['meta']['steps'], [0, 1, 2])
    buffer = loaded['message_hub']['log_scalars']['train/loss']
    assert buffer.mean() == pytest.approx(0.375)
    assert torch.equal(loaded['state_dict']['weight'],
                       torch.arange(6.).reshape(2, 3))


@pytest.mark.parametrize('other', [b'numpy.core.numeric\n_frombuffer\n',
                                   b'numpy.core._internal\n_reconstruct\n',
                                   b'posix\nsystem\n'])
def test_other_globals_stay_refused(other, tmp_path, monkeypatch):
    """Another NumPy name (a reconstructor outside the list, the listed one
    under another module) or any other global is refused; catches an
    allow-list widened to ``numpy.core.*`` or to every module name."""
    monkeypatch.delenv(TRUST_ENV, raising=False)
    path = tmp_path / 'other.pth'
    numpy_1_checkpoint(path)
    rewrite_pickle(path, NUMPY_1_MODULE + RECONSTRUCT, other)
    with pytest.raises(UntrustedCheckpointError) as err:
        load_local_checkpoint(str(path))
    module, name = other.decode().split()
    assert f'{module}.{name}' in str(err.value) and str(path) in str(
        err.value)


@pytest.mark.parametrize('umask', [0o022, 0o077, 0o002])
def test_atomic_checkpoint_gets_the_mode_of_a_plain_write(umask, tmp_path):
    """Under umask 022 a checkpoint is 0644, as ``open(path, 'wb')`` makes
    it (077: 0600, 002: 0664); catches mkstemp's 0600 kept through the
    rename (issue 17)."""
    previous = os.umask(umask)
    try:
        save_checkpoint_atomically({'meta': {'iter': 1}},
                                   str(tmp_path / 'iter_1.pth'))
        with open(tmp_path / 'plain.pth', 'wb') as f:
            f.write(b'x')
    finally:
        os.umask(previous)
    mode = stat.S_IMODE((tmp_path / 'iter_1.pth').stat().st_mode)
    assert mode == 0o666 & ~umask
    assert mode == stat.S_IMODE((tmp_path / 'plain.pth').stat().st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['iter_1.pth',
                                                          'plain.pth']


def test_folder_is_flushed_after_the_rename(tmp_path, monkeypatch):
    """The file is flushed, renamed, then its folder flushed; catches a
    missing folder fsync, or one before the rename (which would not make
    the new name durable)."""
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        kind = 'folder' if stat.S_ISDIR(os.fstat(fd).st_mode) else 'file'
        events.append(f'fsync {kind}')
        real_fsync(fd)

    def replace(src, dst):
        events.append('rename')
        real_replace(src, dst)

    monkeypatch.setattr(os, 'fsync', fsync)
    monkeypatch.setattr(os, 'replace', replace)
    save_checkpoint_atomically({'meta': {'iter': 3}},
                               str(tmp_path / 'iter_3.pth'))
    assert events == ['fsync file', 'rename', 'fsync folder']
    assert load_local_checkpoint(str(tmp_path / 'iter_3.pth'))['meta'] == {
        'iter': 3}


def test_folder_that_cannot_be_flushed_warns_and_keeps_the_file(
        tmp_path, monkeypatch):
    """A file system that refuses to flush a folder (EINVAL) gets a warning
    naming the folder; the checkpoint is in place. Catches a save that
    fails (or removes the finished file) for want of a folder fsync."""
    real_fsync = os.fsync
    logged = record_logs(monkeypatch)

    def fsync(fd):
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(22, 'Invalid argument')
        real_fsync(fd)

    monkeypatch.setattr(os, 'fsync', fsync)
    save_checkpoint_atomically({'meta': {'iter': 4}},
                               str(tmp_path / 'iter_4.pth'))
    assert load_local_checkpoint(str(tmp_path / 'iter_4.pth'))['meta'] == {
        'iter': 4}
    assert len(logged) == 1 and str(tmp_path) in logged[0]


def record_logs(monkeypatch) -> list:
    """The messages the checkpoint module logs from now on (each warning
    counted as new)."""
    logged = []
    monkeypatch.setattr(engine_checkpoint, '_WARNED', set())
    monkeypatch.setattr(engine_checkpoint, 'print_log',
                        lambda message, **kwargs: logged.append(message))
    return logged


def fake_gpus(monkeypatch, count: int, first: int = 0) -> dict:
    """``count`` visible GPUs whose random states are ByteTensors filled
    with ``first + g``; returns the states by device, as set."""
    states = {g: torch.full((16, ), first + g, dtype=torch.uint8)
              for g in range(count)}
    cuda = torch.cuda
    monkeypatch.setattr(cuda, 'is_available', lambda: True)
    monkeypatch.setattr(cuda, 'is_initialized', lambda: True)
    monkeypatch.setattr(cuda, 'device_count', lambda: count)
    monkeypatch.setattr(cuda, 'get_rng_state_all',
                        lambda: [states[g].clone() for g in range(count)])

    def set_rng_state(state, device):
        assert 0 <= device < count, f'GPU {device} of {count}'
        states[device] = state.clone()

    monkeypatch.setattr(cuda, 'set_rng_state', set_rng_state)
    return states


def saved_checkpoint(hook: ResumeCheckHook) -> dict:
    checkpoint = {'meta': {}}
    hook.before_save_checkpoint(SimpleNamespace(), checkpoint)
    return checkpoint


def resume(checkpoint: dict) -> None:
    """A fresh hook's resume from ``checkpoint``, up to the first
    iteration's restore."""
    hook = ResumeCheckHook()
    hook.after_load_checkpoint(SimpleNamespace(_resume=True), checkpoint)
    hook.before_train_iter(SimpleNamespace(), 0)


@pytest.mark.parametrize('resumed_gpus', [4, 2, 6])
def test_resume_with_other_visible_gpus_restores_what_matches(
        resumed_gpus, monkeypatch):
    """Saved with 4 visible GPUs: resumed with 4 all are restored silently;
    with 2, GPUs 0-1 (no IndexError, issue 17); with 6, GPUs 0-3 while 4-5
    keep their state; a different count warns with both counts. Catches
    ``set_rng_state_all`` of the saved list, and restores shifted by GPU."""
    logged = record_logs(monkeypatch)
    torch.manual_seed(7)
    fake_gpus(monkeypatch, 4, first=10)
    checkpoint = saved_checkpoint(ResumeCheckHook())
    cpu = torch.get_rng_state()
    torch.manual_seed(8)
    states = fake_gpus(monkeypatch, resumed_gpus, first=100)
    resume(checkpoint)
    assert torch.equal(torch.get_rng_state(), cpu)
    assert [int(states[g][0]) for g in range(resumed_gpus)] == [
        10 + g if g < 4 else 100 + g for g in range(resumed_gpus)]
    if resumed_gpus == 4:
        assert logged == []
    else:
        assert len(logged) == 1 and f'of 4 GPU(s), this process sees ' \
            f'{resumed_gpus}' in logged[0]


def fake_world(monkeypatch, rank: int, world_size: int,
               gathered: list = None) -> None:
    """This process as ``rank`` of ``world_size``, whose all-gather returns
    ``gathered``."""
    monkeypatch.setattr(engine_checkpoint, 'get_rank', lambda: rank)
    monkeypatch.setattr(engine_checkpoint, 'get_world_size',
                        lambda: world_size)
    monkeypatch.setattr(engine_checkpoint, 'all_gather_object',
                        lambda state: list(gathered))


def cpu_states(seeds) -> list:
    """The CPU random state after seeding with each seed."""
    states = []
    for seed in seeds:
        torch.manual_seed(seed)
        states.append(dict(cpu=torch.get_rng_state()))
    return states


@pytest.mark.parametrize('rank,world_size', [(0, 3), (2, 3), (1, 2),
                                             (3, 4)])
def test_each_rank_restores_its_own_state(rank, world_size, monkeypatch):
    """Saved by 3 ranks (their states gathered at the iteration's end):
    rank r restores rank r's state; a resume with another number of ranks
    warns, and a rank without a saved state keeps its own. Catches every
    rank restoring rank 0's state (issue 17) and an off-by-one rank."""
    logged = record_logs(monkeypatch)
    saved = cpu_states([30, 31, 32])
    fake_world(monkeypatch, 0, 3, saved)
    hook = ResumeCheckHook()
    hook.after_train_iter(SimpleNamespace(), 0)
    checkpoint = saved_checkpoint(hook)
    stored = checkpoint['meta'][RNG_KEY]['ranks']
    assert [torch.equal(s['cpu'], w['cpu'])
            for s, w in zip(stored, saved)] == [True] * 3
    fake_world(monkeypatch, rank, world_size)
    own = cpu_states([99])[0]['cpu']
    resume(checkpoint)
    want = saved[rank]['cpu'] if rank < 3 else own
    assert torch.equal(torch.get_rng_state(), want)
    assert (len(logged) == 1) == (world_size != 3)
    if world_size != 3:
        assert f'of 3 rank(s), this run has {world_size}' in logged[0]


def test_state_saved_before_ranks_is_rank_0s(monkeypatch):
    """A checkpoint of ms_rcnn_mm before per-rank states (one state, no
    rank list) resumes rank 0 exactly and leaves rank 1 as it is; catches
    a KeyError on the old format, or rank 1 taking rank 0's state."""
    record_logs(monkeypatch)
    old = cpu_states([41])[0]
    checkpoint = {'meta': {RNG_KEY: old}}
    fake_world(monkeypatch, 0, 1)
    torch.manual_seed(5)
    resume(checkpoint)
    assert torch.equal(torch.get_rng_state(), old['cpu'])
    fake_world(monkeypatch, 1, 2)
    own = cpu_states([6])[0]['cpu']
    resume(checkpoint)
    assert torch.equal(torch.get_rng_state(), own)


def test_load_from_does_not_restore_the_random_state(monkeypatch):
    """``load_from`` (no ``--resume``) starts a new run: its draws follow
    its own seed, not the checkpoint's state; catches a restore that
    ignores ``runner._resume``."""
    saved = cpu_states([50])[0]
    own = cpu_states([51])[0]['cpu']
    hook = ResumeCheckHook()
    hook.after_load_checkpoint(SimpleNamespace(_resume=False),
                               {'meta': {RNG_KEY: {'ranks': [saved]}}})
    hook.before_train_iter(SimpleNamespace(), 0)
    assert torch.equal(torch.get_rng_state(), own)


def test_two_ranks_under_gloo_each_resume_their_own_draws(tmp_path):
    """Two processes (torchrun, gloo) with different random states: after a
    checkpoint written by rank 0 and a resume, each rank draws what it would
    have drawn without the interruption, and the two ranks' draws differ (so
    a rank restoring rank 0's state would fail)."""
    env = dict(os.environ, OMP_NUM_THREADS='1', CUDA_VISIBLE_DEVICES='',
               PYTHONPATH=os.pathsep.join(
                   [str(REPO / 'tests'), os.environ.get('PYTHONPATH', '')]))
    out = subprocess.run(
        [sys.executable, '-m', 'torch.distributed.run', '--standalone',
         '--nproc_per_node', '2', str(RANK_PROBE), str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    draws = [json.loads((tmp_path / f'draws_rank{r}.json').read_text())
             for r in (0, 1)]
    for rank in (0, 1):
        assert draws[rank]['resumed'] == draws[rank]['uninterrupted']
    assert draws[0]['uninterrupted'] != draws[1]['uninterrupted']
