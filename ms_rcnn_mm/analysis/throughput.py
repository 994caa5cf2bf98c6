"""How fast the CPU runs the MaskIoU head's arithmetic, against how fast it
multiplies matrices at all.

The inference overhead of MS R-CNN over Mask R-CNN is the MaskIoU head's
time (docs/benchmarks.md). With the head's multiply-adds fixed (outputs
unchanged), that time stays near ``head GMACs / GEMM GMAC/s`` once the head
runs at the rate the CPU's BLAS sustains on a large matrix product; this
module measures both rates on the same CPU, interleaved.
"""
import statistics
import time
from typing import Callable, Dict, List

import torch
from mmdet.registry import MODELS
from mmengine.config import Config
from torch import nn

from .complexity import GIGA, MacCounter

#: side of the square float32 matrices whose product measures the machine
GEMM_SIZE = 4096


def build_head(config: str) -> nn.Module:
    """The MaskIoU head of an MS R-CNN config in eval mode, with PyTorch's
    default initialisation (the values do not change the arithmetic)."""
    import ms_rcnn_mm  # noqa: F401  (registers the package's heads)
    head = MODELS.build(
        Config.fromfile(config).model.roi_head.mask_iou_head)
    return head.eval()


def head_inputs(head: nn.Module, rois: int, seed: int = 0) -> tuple:
    """RoI features ``(rois, C, s, s)`` and mask logits ``(rois, 2s, 2s)``
    of the head's sizes."""
    generator = torch.Generator().manual_seed(seed)
    side = head.roi_feat_size
    feats = torch.randn(rois, head.in_channels, side, side,
                        generator=generator)
    masks = torch.randn(rois, 2 * side, 2 * side, generator=generator)
    return feats, masks


def head_gmacs(head: nn.Module, inputs: tuple) -> float:
    """Multiply-adds of one forward of ``head`` on ``inputs``, in GMACs."""
    with torch.no_grad(), MacCounter(head) as counter:
        head(*inputs)
    return counter.total() / GIGA


def _seconds(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(head: nn.Module, inputs: tuple, repeats: int = 5,
            gemm_size: int = GEMM_SIZE) -> Dict[str, float]:
    """Median seconds of the head's forward and of a square GEMM, timed in
    alternation after one warm-up of each, and the rates they imply.

    Returns:
        dict: ``head_ms``, ``head_gmacs``, ``head_gmac_per_s``,
        ``gemm_ms``, ``gemm_gmac_per_s``, ``head_vs_gemm`` (the head's rate
        over the GEMM's) and ``head_ms_at_gemm_rate`` (the head's time at
        the GEMM's rate).
    """
    a, b = torch.randn(gemm_size, gemm_size), torch.randn(
        gemm_size, gemm_size)
    runs: Dict[str, List[float]] = {'head': [], 'gemm': []}
    with torch.no_grad():
        calls = {'head': lambda: head(*inputs), 'gemm': lambda: a @ b}
        for call in calls.values():
            call()
        for _ in range(repeats):
            for name, call in calls.items():
                runs[name].append(_seconds(call))
    head_s, gemm_s = (statistics.median(runs[k]) for k in ('head', 'gemm'))
    gmacs = head_gmacs(head, inputs)
    gemm_rate = gemm_size**3 / GIGA / gemm_s
    return dict(
        head_ms=head_s * 1e3, head_gmacs=gmacs,
        head_gmac_per_s=gmacs / head_s, gemm_ms=gemm_s * 1e3,
        gemm_gmac_per_s=gemm_rate,
        head_vs_gemm=gmacs / head_s / gemm_rate,
        head_ms_at_gemm_rate=gmacs / gemm_rate * 1e3)
