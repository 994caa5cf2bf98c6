"""Run MMDetection 3.3.0's command-line tools with this package loaded.

``tools/train.py`` and ``tools/test.py`` of this repository are this module
applied to mmdet's own scripts (shipped in its wheel under ``.mim/tools``):
same arguments, same environment variables, same behaviour, plus
``import ms_rcnn_mm`` (its registries and :mod:`ms_rcnn_mm.compat`) and the
checks below.

Distributed runs without CUDA
    With ``--launcher pytorch|slurm|mpi`` on a machine where
    ``torch.cuda.is_available()`` is False (a CPU-only torch, or
    ``CUDA_VISIBLE_DEVICES=`` on a GPU machine), the process group is
    initialised before mmdet's ``main`` builds the Runner, with gloo in place
    of the configs' nccl (:func:`ms_rcnn_mm.compat.init_cpu_dist`), and the
    model is wrapped in DDP without device ids
    (:func:`ms_rcnn_mm.compat.cpu_model_wrapper_cfg`). Everywhere else the
    tool runs exactly as mmdet's (on a GPU machine gloo is mmengine's own
    ``--cfg-options env_cfg.dist_cfg.backend=gloo``).
"""
import argparse
import os.path as osp
import runpy
import sys
from typing import List, Optional

import mmdet
import torch
from mmengine.config import Config
from mmengine.logging import print_log

from . import compat

#: ``__name__`` of mmdet's tool when it is loaded to be driven from here
TOOL_MODULE = 'ms_rcnn_mm.mmdet_tool'


def mmdet_tool(name: str) -> str:
    """Path of mmdet's ``tools/<name>``.

    Raises:
        FileNotFoundError: mmdet was installed without its tools.
    """
    root = osp.dirname(mmdet.__file__)
    for path in (osp.join(root, '.mim', 'tools', name),
                 osp.join(osp.dirname(root), 'tools', name)):
        if osp.isfile(path):
            return path
    raise FileNotFoundError(
        f'mmdet {mmdet.__version__} at {root} has no tools/{name}; install '
        'mmdet 3.3.0 from its wheel (pip install mmdet==3.3.0)')


def check_args(argv: List[str]) -> None:
    """Stop early, with a message, where mmengine would fail deep inside.

    Raises:
        SystemExit: ``--amp`` without CUDA (mmengine's ``AmpOptimWrapper``
            asserts that CUDA is available).
    """
    if '--amp' in argv and not torch.cuda.is_available():
        raise SystemExit(
            'error: --amp needs a CUDA device (mmengine\'s AmpOptimWrapper '
            f'supports CUDA, NPU, MLU and MUSA); torch {torch.__version__} '
            'sees none. Run without --amp on this machine.')


def cpu_launcher(argv: List[str]) -> Optional[str]:
    """The ``--launcher`` of a distributed run without CUDA, else None."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument('--launcher', default='none')
    launcher = parser.parse_known_args(argv)[0].launcher
    if launcher == 'none' or torch.cuda.is_available():
        return None
    return launcher


def with_model_wrapper(cfg_options: Optional[dict], wrapper: dict) -> dict:
    """``--cfg-options`` with ``model_wrapper_cfg`` replaced by ``wrapper``
    (which already holds the options' ``model_wrapper_cfg.*`` values)."""
    options = {key: value for key, value in (cfg_options or {}).items()
               if key.split('.')[0] != 'model_wrapper_cfg'}
    options['model_wrapper_cfg'] = wrapper
    return options


def run_on_cpu(path: str, launcher: str) -> None:
    """Run mmdet's tool at ``path`` (``sys.argv`` set) distributed on CPUs.

    The tool's own ``parse_args`` reads the command line once; its config
    (with ``--cfg-options``) gives ``env_cfg.dist_cfg`` to
    :func:`~ms_rcnn_mm.compat.init_cpu_dist` and the model wrapper, which
    is added to the options before the tool's ``main`` builds the Runner.
    """
    tool = runpy.run_path(path, run_name=TOOL_MODULE)
    args = tool['parse_args']()
    cfg = Config.fromfile(args.config)
    cfg.merge_from_dict(args.cfg_options or {})
    compat.init_cpu_dist(launcher, **cfg.get('env_cfg', {}).get(
        'dist_cfg', {}))
    wrapper = compat.cpu_model_wrapper_cfg(
        cfg.get('model_wrapper_cfg'), cfg.get('find_unused_parameters',
                                              False))
    args.cfg_options = with_model_wrapper(args.cfg_options, wrapper)
    if torch.distributed.get_rank() == 0:
        print_log(
            f'--launcher {launcher} without CUDA: '
            f'{torch.distributed.get_world_size()} CPU processes, '
            f'{torch.distributed.get_backend()} process group, '
            f'model_wrapper_cfg={wrapper}', logger='current')
    # run_path returns a copy of the tool's globals: patch those of its main
    tool['main'].__globals__['parse_args'] = lambda: args
    tool['main']()
    compat.destroy_cpu_dist()


def run_mmdet_tool(name: str, argv: Optional[List[str]] = None) -> None:
    """Run mmdet's ``tools/<name>`` as ``__main__`` with ``argv``.

    Distributed runs without CUDA go through :func:`run_on_cpu`.
    """
    import ms_rcnn_mm  # noqa: F401  (registries and stack fixes)
    argv = sys.argv[1:] if argv is None else argv
    check_args(argv)
    path = mmdet_tool(name)
    sys.argv = [path] + list(argv)
    launcher = cpu_launcher(argv)
    if launcher is None:
        runpy.run_path(path, run_name='__main__')
    else:
        run_on_cpu(path, launcher)


if __name__ == '__main__':
    # python -m ms_rcnn_mm.launch {train,test} ARGS: as tools/<name>.py
    if len(sys.argv) < 2 or sys.argv[1] not in ('train', 'test'):
        raise SystemExit('usage: python -m ms_rcnn_mm.launch {train,test} '
                         '[mmdet tool arguments]')
    run_mmdet_tool(f'{sys.argv[1]}.py', sys.argv[2:])
