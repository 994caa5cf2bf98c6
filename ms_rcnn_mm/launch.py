"""Run MMDetection 3.3.0's command-line tools with this package loaded.

``tools/train.py`` and ``tools/test.py`` of this repository are this module
applied to mmdet's own scripts (shipped in its wheel under ``.mim/tools``):
same arguments, same environment variables, same behaviour, plus
``import ms_rcnn_mm`` (its registries and :mod:`ms_rcnn_mm.compat`) and the
checks below.
"""
import os.path as osp
import runpy
import sys
from typing import List, Optional

import mmdet
import torch


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


def run_mmdet_tool(name: str, argv: Optional[List[str]] = None) -> None:
    """Run mmdet's ``tools/<name>`` as ``__main__`` with ``argv``."""
    import ms_rcnn_mm  # noqa: F401  (registries and stack fixes)
    argv = sys.argv[1:] if argv is None else argv
    check_args(argv)
    path = mmdet_tool(name)
    sys.argv = [path] + list(argv)
    runpy.run_path(path, run_name='__main__')


if __name__ == '__main__':
    # python -m ms_rcnn_mm.launch {train,test} ARGS: as tools/<name>.py
    if len(sys.argv) < 2 or sys.argv[1] not in ('train', 'test'):
        raise SystemExit('usage: python -m ms_rcnn_mm.launch {train,test} '
                         '[mmdet tool arguments]')
    run_mmdet_tool(f'{sys.argv[1]}.py', sys.argv[2:])
