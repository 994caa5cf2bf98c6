"""Checkpoints from elsewhere and for a group: NumPy 1.x pickles on the
allow-list (and nothing else), file modes under the umask, and the folder
flushed after the rename."""
import os
import stat
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer

from ms_rcnn_mm.compat import (TRUST_ENV, UntrustedCheckpointError,
                               load_local_checkpoint)
from ms_rcnn_mm.engine import checkpoint as engine_checkpoint
from ms_rcnn_mm.engine import save_checkpoint_atomically

#: NumPy 2.x's and 1.x's name of the module of the array reconstructors,
#: as they stand in a pickle's GLOBAL opcodes (protocol 2: module and name
#: on lines of their own)
NUMPY_2_MODULE = b'numpy._core.multiarray\n'
NUMPY_1_MODULE = b'numpy.core.multiarray\n'
RECONSTRUCT = b'_reconstruct\n'


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
    naming the folder; the checkpoint is in place."""
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
