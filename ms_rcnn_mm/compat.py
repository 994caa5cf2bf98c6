"""Fixes for the pinned OpenMMLab stack on current PyTorch.

Imported by ``import ms_rcnn_mm``; every fix is narrow and idempotent.

Checkpoint loading (torch >= 2.6, the supported floor)
    ``torch.load`` defaults to ``weights_only=True`` from torch 2.6 on, and
    mmengine 0.10.7 calls it without the argument, so a checkpoint written by
    mmengine's ``CheckpointHook`` fails to load (``--resume``, ``load_from``).
    Instead of turning the safe loader off, :func:`allow_mmengine_globals`
    allow-lists the few extra types that mmengine checkpoints hold (its
    ``HistoryBuffer`` with its statistics methods, NumPy arrays, dtypes and
    scalars, under the names NumPy 1.x and 2.x pickle them by), and
    :func:`load_local_checkpoint` replaces mmengine's loader for local
    paths: it keeps ``weights_only=True``, and turns torch's errors into
    :class:`CheckpointError` messages that name the file. A checkpoint that
    holds anything else (an arbitrary pickled object) is refused unless the
    user trusts it explicitly with ``MS_RCNN_MM_TRUSTED_CHECKPOINTS``: ``1``
    trusts every file, otherwise it is a ``os.pathsep``-separated list of
    files or folders. Only those are loaded with full pickle.

Distributed training on machines without CUDA
    mmengine 0.10.7's ``init_dist`` always calls ``torch.cuda.set_device``,
    which fails on a CPU-only torch, and ``Runner.wrap_model`` gives DDP
    ``device_ids=[LOCAL_RANK]``, which DDP rejects for a CPU module.
    :func:`init_cpu_dist` initialises the process group from the launcher's
    environment variables instead (``Runner.setup_env`` skips ``init_dist``
    when a process group exists), with gloo where the config asks for nccl,
    and :func:`cpu_model_wrapper_cfg` gives the ``model_wrapper_cfg`` that
    wraps a CPU model as mmengine would, without device ids;
    :func:`destroy_cpu_dist` tears the group down at the end. None is
    applied by :func:`apply`: :mod:`ms_rcnn_mm.launch` calls them for
    ``--launcher pytorch|slurm|mpi`` when CUDA is unavailable only.

Test metrics written by every rank
    mmengine 0.10.7's ``LoggerHook.after_test_epoch`` dumps the metrics'
    JSON file on every rank of a distributed test, so ranks can corrupt it;
    :func:`apply` makes that dump run on the main process only
    (:func:`dump_on_main_process`).
"""
import datetime
import os
import os.path as osp
import pickle
import subprocess
from typing import Callable, Dict, List, Mapping, Optional, Tuple, Union

import numpy as np
import torch
from mmengine.dist import is_main_process
from mmengine.fileio import dump
from mmengine.hooks import logger_hook
from mmengine.logging import HistoryBuffer
from mmengine.registry import MODEL_WRAPPERS
from mmengine.runner.checkpoint import CheckpointLoader
from torch import distributed as torch_dist
from torch.nn.parallel import DistributedDataParallel

TRUST_ENV = 'MS_RCNN_MM_TRUSTED_CHECKPOINTS'
#: statistics every HistoryBuffer registers (its ``_statistics_methods`` is
#: filled only when a first buffer is built, so a fresh process has none)
HISTORY_BUFFER_STATISTICS = ('min', 'max', 'current', 'mean')
#: the module that holds NumPy's array and scalar reconstructors, as NumPy
#: 1.x and 2.x pickles name it (2.x moved ``numpy.core`` to ``numpy._core``)
NUMPY_MULTIARRAY_NAMES = ('numpy.core.multiarray', 'numpy._core.multiarray')
#: the reconstructors of that module that pickled arrays and scalars call
NUMPY_RECONSTRUCTORS = ('_reconstruct', 'scalar')
#: how torch's weights-only unpickler starts the line that names a global of
#: a module it blocks outright (``os``, ``posix``, ``subprocess``, ...)
BLOCKED_GLOBAL = 'Trying to load unsupported GLOBAL'
#: mmengine's and torch's default rendezvous port
DEFAULT_MASTER_PORT = '29500'
#: environment variables each launcher sets, read by :func:`launcher_env`
LAUNCHER_VARIABLES = {
    'pytorch': ('RANK', 'LOCAL_RANK', 'WORLD_SIZE', 'MASTER_ADDR'),
    'slurm': ('SLURM_PROCID', 'SLURM_LOCALID', 'SLURM_NTASKS',
              'SLURM_NODELIST'),
    'mpi': ('OMPI_COMM_WORLD_RANK', 'OMPI_COMM_WORLD_LOCAL_RANK',
            'OMPI_COMM_WORLD_SIZE', 'MASTER_ADDR'),
}
#: backends that need CUDA, replaced by gloo on the CPU
CUDA_BACKENDS = ('nccl', )


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be loaded; the message names the file."""


class UntrustedCheckpointError(CheckpointError):
    """A checkpoint that holds objects outside the allow-list, refused
    because the user has not marked it trusted."""


def _numpy_globals() -> List[Union[Callable, Tuple[Callable, str]]]:
    """NumPy types that pickled arrays, dtypes and scalars refer to.

    The reconstructors are listed under both their NumPy 1.x and 2.x names
    (:data:`NUMPY_MULTIARRAY_NAMES`), whichever NumPy is installed: a
    checkpoint saved under either loads under both.
    """
    multiarray = (getattr(np, '_core', None) or np.core).multiarray
    reconstructors = [(getattr(multiarray, name), f'{module}.{name}')
                      for module in NUMPY_MULTIARRAY_NAMES
                      for name in NUMPY_RECONSTRUCTORS]
    dtype_classes = [type(np.dtype(code)) for code in '?bBhHiIlLqQefdgFDGUSO']
    return reconstructors + [np.ndarray, np.dtype] + dtype_classes


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
        CheckpointError: the file is truncated or corrupt.
        UntrustedCheckpointError: it holds objects outside the allow-list
            and is not trusted.
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
            raise UntrustedCheckpointError(
                f'checkpoint {filename} holds objects outside the allow-list '
                f'of safe types, so it was not loaded ({_first_line(err)}). '
                f'If you trust this file, set {TRUST_ENV}={filename} (or 1 '
                f'to trust every file) to load it with full pickle.') from err
        raise _corrupt(filename, err) from err
    except (RuntimeError, EOFError, ValueError) as err:
        raise _corrupt(filename, err) from err


def _first_line(err: Exception) -> str:
    """The line of ``err`` that says what failed (torch puts it after
    'WeightsUnpickler error:', or, for a global of a module it blocks, on a
    line of its own that names the ``GLOBAL``)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    blocked = [line for line in lines if line.startswith(BLOCKED_GLOBAL)]
    if blocked:
        return blocked[0]
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


def slurm_master_addr(nodelist: str) -> str:
    """First host of a SLURM node list (``scontrol show hostnames``).

    Raises:
        RuntimeError: ``scontrol`` is missing or fails on ``nodelist``.
    """
    try:
        out = subprocess.run(['scontrol', 'show', 'hostnames', nodelist],
                             capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError) as err:
        detail = getattr(err, 'stderr', '') or err
        raise RuntimeError(f'scontrol show hostnames {nodelist} failed: '
                           f'{str(detail).strip()}') from err
    hosts = out.stdout.split()
    if not hosts:
        raise RuntimeError(f'scontrol show hostnames {nodelist} printed no '
                           'host')
    return hosts[0]


def launcher_env(launcher: str,
                 environ: Mapping[str, str] = os.environ,
                 master_addr: Callable[[str], str] = slurm_master_addr
                 ) -> Dict[str, str]:
    """torch's rendezvous variables from those a launcher sets.

    ``pytorch`` (torchrun) sets them itself; ``slurm`` (srun) maps
    ``SLURM_PROCID``, ``SLURM_LOCALID``, ``SLURM_NTASKS`` to ``RANK``,
    ``LOCAL_RANK``, ``WORLD_SIZE`` and takes ``MASTER_ADDR`` (unless set)
    from the first host of ``SLURM_NODELIST``; ``mpi`` (Open MPI) maps its
    ``OMPI_COMM_WORLD_*`` variables and needs ``MASTER_ADDR``. ``MASTER_PORT``
    defaults to 29500, as in mmengine.

    Args:
        launcher (str): ``'pytorch'``, ``'slurm'`` or ``'mpi'``.
        environ (Mapping[str, str]): The environment. Defaults to
            ``os.environ``.
        master_addr (Callable[[str], str]): Host of rank 0 from a SLURM
            node list. Defaults to :func:`slurm_master_addr`.

    Returns:
        dict[str, str]: ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``,
        ``MASTER_ADDR`` and ``MASTER_PORT``.

    Raises:
        ValueError: unknown launcher.
        KeyError: a variable the launcher should have set is missing.
    """
    if launcher not in LAUNCHER_VARIABLES:
        raise ValueError(f'launcher {launcher!r} is not one of '
                         f'{sorted(LAUNCHER_VARIABLES)}')
    missing = [k for k in LAUNCHER_VARIABLES[launcher] if k not in environ
               and not (launcher == 'slurm' and k == 'SLURM_NODELIST'
                        and 'MASTER_ADDR' in environ)]
    if missing:
        raise KeyError(f'--launcher {launcher} needs the environment '
                       f'variables {", ".join(missing)}, which are not set')
    if launcher == 'pytorch':
        env = {k: environ[k] for k in LAUNCHER_VARIABLES['pytorch']}
    else:
        rank, local_rank, world_size = (
            environ[k] for k in LAUNCHER_VARIABLES[launcher][:3])
        env = dict(RANK=rank, LOCAL_RANK=local_rank, WORLD_SIZE=world_size)
        env['MASTER_ADDR'] = environ.get('MASTER_ADDR') or master_addr(
            environ.get('SLURM_NODELIST', ''))
    env['MASTER_PORT'] = environ.get('MASTER_PORT', DEFAULT_MASTER_PORT)
    return env


def init_cpu_dist(launcher: str,
                  backend: str = 'gloo',
                  timeout: Optional[float] = None,
                  init_backend: str = 'torch',
                  **kwargs) -> None:
    """``mmengine.dist.init_dist`` for machines without CUDA.

    Sets ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and
    ``MASTER_PORT`` from the launcher's variables (:func:`launcher_env`) and
    initialises the default process group, without
    ``torch.cuda.set_device``. The arguments are those of mmengine's
    ``env_cfg.dist_cfg``.

    Args:
        launcher (str): ``'pytorch'``, ``'slurm'`` or ``'mpi'``.
        backend (str): Requested backend; ``'nccl'`` (mmdet's default) needs
            CUDA and is replaced by ``'gloo'``. Defaults to ``'gloo'``.
        timeout (float, optional): Seconds, as in mmengine's ``dist_cfg``.
        init_backend (str): Only ``'torch'`` is supported here.
        **kwargs: Passed to ``torch.distributed.init_process_group``.

    Raises:
        ValueError: ``init_backend`` is not ``'torch'``.
    """
    if init_backend != 'torch':
        raise ValueError(f'env_cfg.dist_cfg.init_backend={init_backend!r} '
                         "is not supported without CUDA; use 'torch'")
    os.environ.update(launcher_env(launcher))
    if timeout is not None:
        kwargs['timeout'] = datetime.timedelta(seconds=timeout)
    torch_dist.init_process_group(
        backend='gloo' if backend in CUDA_BACKENDS else backend,
        init_method='env://',
        rank=int(os.environ['RANK']),
        world_size=int(os.environ['WORLD_SIZE']),
        **kwargs)


def destroy_cpu_dist() -> None:
    """Destroy the process group of :func:`init_cpu_dist` once every rank
    has finished.

    A process that exits with a live gloo group can abort in interpreter
    shutdown (``terminate called without an active exception``: gloo's
    threads outlive the interpreter, pytorch/pytorch#190489); a rank of
    ``dist_test.sh`` did once in about 30 two-process runs here. The barrier
    keeps a rank from leaving while another still collects results.
    """
    if torch_dist.is_initialized():
        torch_dist.barrier()
        torch_dist.destroy_process_group()


def cpu_model_wrapper_cfg(wrapper_cfg: Optional[dict],
                          find_unused_parameters: bool = False) -> dict:
    """``model_wrapper_cfg`` that wraps a CPU model as mmengine would.

    Args:
        wrapper_cfg (dict, optional): The config's ``model_wrapper_cfg``.
        find_unused_parameters (bool): The config's top-level
            ``find_unused_parameters``, which mmengine uses when
            ``model_wrapper_cfg`` is None. Defaults to False.

    Returns:
        dict: Without ``wrapper_cfg``, mmengine's default wrapper
        (``MMDistributedDataParallel`` with ``broadcast_buffers=False``)
        with ``device_ids=None``; otherwise ``wrapper_cfg`` with
        ``device_ids=None`` added where its type is a DDP subclass.
    """
    if wrapper_cfg is None:
        return dict(type='MMDistributedDataParallel', device_ids=None,
                    broadcast_buffers=False,
                    find_unused_parameters=find_unused_parameters)
    wrapper_cfg = dict(wrapper_cfg)
    wrapper_type = MODEL_WRAPPERS.get(
        wrapper_cfg.setdefault('type', 'MMDistributedDataParallel'))
    if isinstance(wrapper_type, type) and issubclass(
            wrapper_type, DistributedDataParallel):
        wrapper_cfg['device_ids'] = None
    return wrapper_cfg


def dump_on_main_process(obj, file=None, **kwargs):
    """mmengine's ``fileio.dump`` on the main process only, None elsewhere.

    mmengine 0.10.7's ``LoggerHook.after_test_epoch`` writes the test
    metrics' JSON file from every rank of a distributed test; two ranks
    writing one file can leave it corrupt (seen: a 2-process
    ``dist_test.sh`` run whose JSON ended in another rank's bytes).
    """
    if is_main_process():
        return dump(obj, file, **kwargs)
    return None


def apply() -> None:
    """Apply every fix of this module (idempotent)."""
    allow_mmengine_globals()
    logger_hook.dump = dump_on_main_process
    # mmengine registers its local loader under the empty prefix.
    CheckpointLoader.register_scheme(
        prefixes='', loader=load_local_checkpoint, force=True)
