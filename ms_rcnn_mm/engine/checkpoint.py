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
    The same hook stores torch's random state in each checkpoint's ``meta``,
    one entry per rank (CPU generator and every visible GPU's), and restores
    each rank's own before the first iteration after a resume, so that RoI
    sampling draws what the uninterrupted run drew. Only rank 0 writes the
    checkpoint, so under DDP every rank's state is gathered to all ranks at
    the end of each training iteration and epoch (one ``all_gather_object``
    of a few kilobytes per rank). A resume with another number of ranks or
    of visible GPUs restores the states that have a counterpart (rank ``r``
    the state of rank ``r``, GPU ``g`` that of GPU ``g``) and warns about the
    rest. NumPy's and Python's states, which the data pipeline draws from,
    are not stored: mmengine replays the already-trained batches of the epoch
    to reach the resume point, which redraws them.
"""
import errno
import logging
import os
import os.path as osp
import re
import uuid
from typing import Dict, List, Optional, Tuple

import mmengine.runner.runner as mmengine_runner
import torch
from mmengine.dist import all_gather_object, get_rank, get_world_size
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.runner.checkpoint import find_latest_checkpoint
from mmengine.runner.checkpoint import save_checkpoint as mmengine_save

from ..compat import (CheckpointError, UntrustedCheckpointError,
                      load_local_checkpoint)
from ..registry import HOOKS

#: key of the random state in a checkpoint's ``meta``
RNG_KEY = 'ms_rcnn_mm_rng_state'
#: key of the per-rank list in the stored random state
RANKS_KEY = 'ranks'
#: one rank's random state: ``cpu`` (a ByteTensor) and, where CUDA was in
#: use, ``cuda`` (one ByteTensor per visible GPU)
RngState = Dict[str, object]
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


def rng_state() -> RngState:
    """This process's torch random state: the CPU generator's and, once
    CUDA is initialised, every visible GPU's."""
    state = dict(cpu=torch.get_rng_state())
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: RngState) -> None:
    """Set torch's generators to ``state`` (one rank's).

    The GPUs the state and this process both have are restored, GPU ``g``
    from entry ``g``; a different number of visible GPUs gets a warning that
    says which were restored.
    """
    torch.set_rng_state(state['cpu'])
    if 'cuda' not in state:
        return
    saved = list(state['cuda'])
    visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    for device, device_state in enumerate(saved[:visible]):
        torch.cuda.set_rng_state(device_state, device)
    if len(saved) != visible:
        _warn_once(
            f'--resume: the checkpoint holds the CUDA random state of '
            f'{len(saved)} GPU(s), this process sees {visible}: restored '
            f'that of the first {min(len(saved), visible)}; the others keep '
            'their seeded state, so their random draws differ from the '
            'uninterrupted run')


def rank_states(stored: Optional[dict]) -> List[RngState]:
    """The per-rank states of a checkpoint's ``meta[RNG_KEY]``; a state
    stored without ranks (ms_rcnn_mm before per-rank states) is rank 0's."""
    if stored is None:
        return []
    return list(stored[RANKS_KEY]) if RANKS_KEY in stored else [stored]


@HOOKS.register_module()
class ResumeCheckHook(Hook):
    """Resume from the newest complete checkpoint, with torch's random state
    per rank.

    See :mod:`ms_rcnn_mm.engine.checkpoint`. Has no argument; add it to
    ``custom_hooks`` (``configs/_base_/ms-rcnn.py`` does).
    """

    priority = 'VERY_HIGH'  # before CheckpointHook (VERY_LOW) saves

    def __init__(self) -> None:
        self._rng_state: Optional[RngState] = None
        self._rank_states: Optional[List[RngState]] = None

    def before_run(self, runner) -> None:
        """Point an automatic ``--resume`` at a checkpoint that loads."""
        if runner._resume and runner._load_from is None:
            runner._load_from = newest_complete_checkpoint(runner.work_dir)

    def _gather(self) -> None:
        """Collect every rank's random state (a collective: every rank calls
        it, at the same points)."""
        if get_world_size() > 1:
            self._rank_states = all_gather_object(rng_state())

    def after_train_iter(self, runner, batch_idx: int, data_batch=None,
                         outputs=None) -> None:
        """Gather the ranks' states a checkpoint of this iteration stores."""
        self._gather()

    def after_train_epoch(self, runner) -> None:
        """Gather the ranks' states a checkpoint of this epoch stores."""
        self._gather()

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        """Store every rank's random state in ``checkpoint['meta']`` (rank 0
        alone saves)."""
        states = (self._rank_states if self._rank_states is not None
                  and get_world_size() > 1 else [rng_state()])
        checkpoint.setdefault('meta', {})[RNG_KEY] = {RANKS_KEY: states}

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        """Keep this rank's stored random state for the first iteration (of
        a resumed run only: ``load_from`` starts a new run)."""
        if not runner._resume:
            return
        states = rank_states(checkpoint.get('meta', {}).get(RNG_KEY))
        rank, world_size = get_rank(), get_world_size()
        if states and len(states) != world_size:
            _warn_once(
                f'--resume: the checkpoint holds the random state of '
                f'{len(states)} rank(s), this run has {world_size}: ranks '
                f'0-{min(len(states), world_size) - 1} restore their own, '
                'the others keep their seeded state')
        self._rng_state = states[rank] if rank < len(states) else None

    def before_train_iter(self, runner, batch_idx: int,
                          data_batch=None) -> None:
        """Restore this rank's random state of the checkpoint, once."""
        if self._rng_state is None:
            return
        restore_rng_state(self._rng_state)
        self._rng_state = None
