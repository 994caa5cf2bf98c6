"""Checkpoints from elsewhere: NumPy 1.x pickles on the allow-list (and
nothing else)."""
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer

from ms_rcnn_mm.compat import (TRUST_ENV, UntrustedCheckpointError,
                               load_local_checkpoint)

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
