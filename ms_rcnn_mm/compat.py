"""Fixes for the pinned OpenMMLab stack on current PyTorch.

Imported by ``import ms_rcnn_mm``; every fix is narrow and idempotent.

Checkpoint loading under torch >= 2.6
    ``torch.load`` defaults to ``weights_only=True`` there, and mmengine
    0.10.7 calls it without the argument, so a checkpoint written by
    mmengine's ``CheckpointHook`` fails to load (``--resume``, ``load_from``).
    Instead of turning the safe loader off, :func:`allow_mmengine_globals`
    allow-lists the few extra types that mmengine checkpoints hold (its
    ``HistoryBuffer`` with its statistics methods, NumPy arrays, dtypes and
    scalars), and
    :func:`load_local_checkpoint` replaces mmengine's loader for local
    paths: it keeps ``weights_only=True``, and turns torch's errors into
    :class:`CheckpointError` messages that name the file. A checkpoint that
    holds anything else (an arbitrary pickled object) is refused unless the
    user trusts it explicitly with ``MS_RCNN_MM_TRUSTED_CHECKPOINTS``: ``1``
    trusts every file, otherwise it is a ``os.pathsep``-separated list of
    files or folders. Only those are loaded with full pickle.
"""
import os
import os.path as osp
import pickle
from typing import Callable, List, Optional

import numpy as np
import torch
from mmengine.logging import HistoryBuffer
from mmengine.runner.checkpoint import CheckpointLoader

TRUST_ENV = 'MS_RCNN_MM_TRUSTED_CHECKPOINTS'
#: statistics every HistoryBuffer registers (its ``_statistics_methods`` is
#: filled only when a first buffer is built, so a fresh process has none)
HISTORY_BUFFER_STATISTICS = ('min', 'max', 'current', 'mean')
#: torch releases whose ``torch.load`` defaults to ``weights_only=True``.
WEIGHTS_ONLY_DEFAULT_SINCE = (2, 6)


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be loaded; the message names the file."""


def _torch_version() -> tuple:
    return tuple(int(p) for p in torch.__version__.split('+')[0].split('.')[:2])


def _numpy_globals() -> List[Callable]:
    """NumPy types that pickled arrays, dtypes and scalars refer to."""
    core = getattr(np, '_core', None) or np.core
    dtype_classes = [type(np.dtype(code)) for code in '?bBhHiIlLqQefdgFDGUSO']
    return [core.multiarray._reconstruct, core.multiarray.scalar,
            np.ndarray, np.dtype] + dtype_classes


def history_buffer_method(owner: type, name: str) -> Callable:
    """Stand-in for ``getattr`` in checkpoints, limited to what they need.

    A pickled ``HistoryBuffer`` holds its statistics methods as
    ``getattr(HistoryBuffer, 'mean')``; allowing ``getattr`` itself would let
    a checkpoint reach any attribute of any allowed object.
    """
    known = set(HISTORY_BUFFER_STATISTICS) | set(
        HistoryBuffer._statistics_methods)
    if owner is HistoryBuffer and isinstance(name, str) and name in known:
        return getattr(owner, name)
    raise pickle.UnpicklingError(
        f'getattr({owner!r}, {name!r}) is not allowed in a checkpoint')


def allow_mmengine_globals() -> None:
    """Allow-list what mmengine checkpoints hold for ``weights_only`` loads."""
    if hasattr(torch.serialization, 'add_safe_globals'):
        torch.serialization.add_safe_globals(
            [HistoryBuffer, (history_buffer_method, '__builtin__.getattr'),
             (history_buffer_method, 'builtins.getattr')] + _numpy_globals())


def is_trusted(filename: str) -> bool:
    """Whether ``MS_RCNN_MM_TRUSTED_CHECKPOINTS`` names ``filename``."""
    value = os.environ.get(TRUST_ENV, '')
    if value.strip() == '1':
        return True
    path = osp.realpath(filename)
    for entry in filter(None, value.split(os.pathsep)):
        root = osp.realpath(osp.expanduser(entry))
        if path == root or path.startswith(root.rstrip(os.sep) + os.sep):
            return True
    return False


def load_local_checkpoint(filename: str,
                          map_location: Optional[str] = None) -> dict:
    """Load a local checkpoint safely, with errors that name the file.

    Args:
        filename (str): Path of the checkpoint.
        map_location (str, optional): As for :func:`torch.load`.

    Returns:
        dict: The loaded checkpoint.

    Raises:
        FileNotFoundError: ``filename`` does not exist.
        CheckpointError: the file is truncated or corrupt, or it holds
            objects outside the allow-list and is not trusted.
    """
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'checkpoint {filename} can not be found.')
    weights_only = not is_trusted(filename)
    try:
        return torch.load(
            filename, map_location=map_location, weights_only=weights_only)
    except pickle.UnpicklingError as err:
        if weights_only and 'Weights only load failed' in str(err):
            raise CheckpointError(
                f'checkpoint {filename} holds objects outside the allow-list '
                f'of safe types, so it was not loaded ({_first_line(err)}). '
                f'If you trust this file, set {TRUST_ENV}={filename} (or 1 '
                f'to trust every file) to load it with full pickle.') from err
        raise _corrupt(filename, err) from err
    except (RuntimeError, EOFError, ValueError) as err:
        raise _corrupt(filename, err) from err


def _first_line(err: Exception) -> str:
    """The line of ``err`` that says what failed (torch puts it after
    'WeightsUnpickler error:')."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    for k, line in enumerate(lines):
        if line.endswith('WeightsUnpickler error:') and k + 1 < len(lines):
            return lines[k + 1]
        if 'WeightsUnpickler error:' in line:
            return line.split('WeightsUnpickler error:', 1)[1].strip()
    return lines[0] if lines else repr(err)


def _corrupt(filename: str, err: Exception) -> CheckpointError:
    return CheckpointError(
        f'checkpoint {filename} is truncated or corrupt '
        f'({type(err).__name__}: {_first_line(err)})')


def apply() -> None:
    """Apply every fix of this module (idempotent)."""
    allow_mmengine_globals()
    if _torch_version() >= WEIGHTS_ONLY_DEFAULT_SINCE:
        # mmengine registers its local loader under the empty prefix.
        CheckpointLoader.register_scheme(
            prefixes='', loader=load_local_checkpoint, force=True)
