"""Checkpoints that survive a killed run, and resumes that continue exactly.

Atomic writes
    :func:`save_checkpoint_atomically` replaces mmengine's
    ``save_checkpoint`` in ``Runner.save_checkpoint`` (installed by
    :func:`install_atomic_save`, which ``import ms_rcnn_mm`` calls): a local
    checkpoint is written to a temporary file in the same folder, flushed to
    disk and renamed over its final name, and the folder is flushed after
    the rename, so a run killed while it writes (or a machine that loses
    power afterwards) leaves the previous files as they were and never a
    partial ``iter_N.pth``. The file gets the mode a plain write gets under
    the process's umask (0644 under 022), so that a group that shares the
    work folder can read it. ``CheckpointHook`` writes ``last_checkpoint``
    only after the checkpoint is complete.

Resume
    :class:`ResumeCheckHook` makes ``--resume`` (without a path) start from
    the newest checkpoint of the work folder that loads: the one
    ``last_checkpoint`` names, else the others from the newest. One that is
    truncated or corrupt (a disk that filled, a copy cut short) is skipped
    with a warning; when every one is, training stops with a
    :class:`~ms_rcnn_mm.compat.CheckpointError` that names each file. A
    checkpoint refused for its content (not on the allow-list) is never
    skipped: that error goes to the user as it is.

Random state
    The same hook stores torch's random state (CPU and CUDA) in each
    checkpoint's ``meta`` and restores it before the first iteration after a
    resume, so that RoI sampling draws what the uninterrupted run drew.
    NumPy's and Python's states, which the data pipeline draws from, are not
    stored: mmengine replays the already-trained batches of the epoch to
    reach the resume point, which redraws them.
"""
import errno
import logging
import os
import os.path as osp
import re
import uuid
from typing import List, Optional, Tuple

import mmengine.runner.runner as mmengine_runner
import torch
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.runner.checkpoint import find_latest_checkpoint
from mmengine.runner.checkpoint import save_checkpoint as mmengine_save

from ..compat import (CheckpointError, UntrustedCheckpointError,
                      load_local_checkpoint)
from ..registry import HOOKS

#: key of the random state in a checkpoint's ``meta``
RNG_KEY = 'ms_rcnn_mm_rng_state'
#: names of the checkpoints mmengine's CheckpointHook writes, with the step
CHECKPOINT_NAME = re.compile(r'^(?:epoch|iter)_(\d+)\.pth$')
#: URI scheme separator: such filenames go to mmengine's own writer
URI_MARK = '://'
#: mode of a new checkpoint before the umask, that of ``open(path, 'wb')``
NEW_FILE_MODE = 0o666
#: errors of ``fsync`` on a folder of a file system that cannot flush one
UNSUPPORTED_FSYNC = (errno.EINVAL, errno.ENOTSUP)
#: warnings already given (each is given once)
_WARNED = set()


def _warn_once(message: str) -> None:
    """``message`` as a warning of the current logger, the first time."""
    if message not in _WARNED:
        _WARNED.add(message)
        print_log(message, logger='current', level=logging.WARNING)


def save_checkpoint_atomically(checkpoint: dict, filename: str,
                               file_client_args: Optional[dict] = None,
                               backend_args: Optional[dict] = None) -> None:
    """mmengine's ``save_checkpoint``, atomic for local files.

    Args:
        checkpoint (dict): What to save.
        filename (str): Destination; URIs (``s3://``, ``pavi://``) and
            non-default backends are handed to mmengine's writer.
        file_client_args (dict, optional): As mmengine's.
        backend_args (dict, optional): As mmengine's.
    """
    if URI_MARK in filename or file_client_args or backend_args:
        mmengine_save(checkpoint, filename, file_client_args, backend_args)
        return
    folder = osp.dirname(osp.abspath(filename))
    os.makedirs(folder, exist_ok=True)
    partial = osp.join(folder,
                       f'.{osp.basename(filename)}.{uuid.uuid4().hex}.partial')
    # a new file, as open(filename, 'wb') makes it: the umask decides its
    # mode (mkstemp's 0600 would hide it from the group)
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, NEW_FILE_MODE)
    try:
        with os.fdopen(fd, 'wb') as f:
            torch.save(checkpoint, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, filename)
    except BaseException:
        if osp.exists(partial):
            os.remove(partial)
        raise
    fsync_folder(folder)


def fsync_folder(folder: str) -> None:
    """Flush ``folder``'s entries (a rename into it) to disk.

    File systems that cannot flush a folder (``EINVAL``), some network ones,
    get a warning once; the file itself is complete on disk by then.
    """
    fd = os.open(folder, os.O_RDONLY | getattr(os, 'O_DIRECTORY', 0))
    try:
        os.fsync(fd)
    except OSError as err:
        if err.errno not in UNSUPPORTED_FSYNC:
            raise
        _warn_once(f'cannot flush the folder {folder} to disk ({err}): the '
                   'checkpoint is complete, but its new name may not '
                   'survive a power loss')
    finally:
        os.close(fd)


def install_atomic_save() -> None:
    """Make ``Runner.save_checkpoint`` write with
    :func:`save_checkpoint_atomically` (idempotent)."""
    mmengine_runner.save_checkpoint = save_checkpoint_atomically


def checkpoint_candidates(work_dir: str) -> List[str]:
    """Checkpoints of ``work_dir`` to resume from, best first: the one
    ``last_checkpoint`` names, then ``epoch_N``/``iter_N`` by decreasing N."""
    last = find_latest_checkpoint(work_dir) if osp.isdir(work_dir) else None
    numbered: List[Tuple[int, str]] = []
    for name in os.listdir(work_dir) if osp.isdir(work_dir) else []:
        match = CHECKPOINT_NAME.match(name)
        if match:
            numbered.append((int(match.group(1)), osp.join(work_dir, name)))
    ordered = [path for _, path in sorted(numbered, reverse=True)]
    if last:
        ordered = [last] + [p for p in ordered
                            if osp.abspath(p) != osp.abspath(last)]
    return ordered


def newest_complete_checkpoint(work_dir: str) -> Optional[str]:
    """The first of :func:`checkpoint_candidates` that loads.

    Returns:
        str or None: Its path; None when ``work_dir`` has no checkpoint.

    Raises:
        CheckpointError: every checkpoint is truncated, corrupt or missing
            (the message names each with its error).
        UntrustedCheckpointError: the newest loadable one holds objects
            outside the allow-list.
    """
    candidates = checkpoint_candidates(work_dir)
    failures = []
    for path in candidates:
        try:
            load_local_checkpoint(path, map_location='cpu')
        except UntrustedCheckpointError:
            raise
        except (CheckpointError, FileNotFoundError) as err:
            failures.append(f'{path}: {err}')
            print_log(f'--resume: skipping {path}, which can not be loaded '
                      f'({err})', logger='current', level=logging.WARNING)
            continue
        return path
    if failures:
        raise CheckpointError(
            f'--resume: no complete checkpoint in {work_dir}; tried '
            + '; '.join(failures))
    return None


@HOOKS.register_module()
class ResumeCheckHook(Hook):
    """Resume from the newest complete checkpoint, with torch's random state.

    See :mod:`ms_rcnn_mm.engine.checkpoint`. Has no argument; add it to
    ``custom_hooks`` (``configs/_base_/ms-rcnn.py`` does).
    """

    priority = 'VERY_HIGH'

    def __init__(self) -> None:
        self._rng_state: Optional[dict] = None

    def before_run(self, runner) -> None:
        """Point an automatic ``--resume`` at a checkpoint that loads."""
        if runner._resume and runner._load_from is None:
            runner._load_from = newest_complete_checkpoint(runner.work_dir)

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        """Store torch's random state in ``checkpoint['meta']``."""
        state = dict(cpu=torch.get_rng_state())
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state['cuda'] = torch.cuda.get_rng_state_all()
        checkpoint.setdefault('meta', {})[RNG_KEY] = state

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        """Keep the stored random state for the first iteration (of a
        resumed run only: ``load_from`` starts a new run)."""
        if runner._resume:
            self._rng_state = checkpoint.get('meta', {}).get(RNG_KEY)

    def before_train_iter(self, runner, batch_idx: int,
                          data_batch=None) -> None:
        """Restore the random state of the checkpoint, once."""
        if self._rng_state is None:
            return
        torch.set_rng_state(self._rng_state['cpu'])
        if 'cuda' in self._rng_state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(self._rng_state['cuda'])
        self._rng_state = None
