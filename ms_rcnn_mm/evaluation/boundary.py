"""Boundary IoU (Cheng et al., CVPR 2021) of predicted masks with their
ground truth, through faster-coco-eval (the ``[boundary]`` extra).

Boundary IoU is the IoU of the two masks' inner bands of width
``dilation_ratio`` x the image diagonal; Boundary AP matches detections
with ``min(mask IoU, boundary IoU)`` and is otherwise COCO's segm AP, as
faster-coco-eval's ``iouType='boundary'`` computes it.
"""
from typing import Callable, List

import numpy as np
import pycocotools.mask as mask_util

#: band width over the image diagonal: the paper's and faster-coco-eval's
DILATION_RATIO = 0.02


def boundary_function() -> Callable:
    """faster-coco-eval's ``rleToBoundary(rle, dilation_ratio)``.

    Raises:
        ImportError: faster-coco-eval is not installed (names the extra).
    """
    try:
        from faster_coco_eval.core.mask import rleToBoundary
    except ImportError as error:
        raise ImportError(
            'Boundary AP (MaskIoUQualityMetric(boundary=True)) needs '
            'faster-coco-eval: pip install "ms_rcnn_mm[boundary]"') from error
    return rleToBoundary


def boundary_rles(rles: List[dict],
                  dilation_ratio: float = DILATION_RATIO) -> List[dict]:
    """The inner boundary band of each RLE mask, as RLEs of the same size
    (the image border counts as a mask edge)."""
    to_boundary = boundary_function()
    return [to_boundary(rle, dilation_ratio) for rle in rles]


def boundary_match_ious(mask_ious: np.ndarray, det_rles: List[dict],
                        gt_rles: List[dict], crowd: np.ndarray,
                        dilation_ratio: float = DILATION_RATIO) -> np.ndarray:
    """IoUs that Boundary AP matches with: ``min(mask IoU, boundary IoU)``
    on the non-crowd columns, the mask IoU on crowd ones.

    Args:
        mask_ious (np.ndarray): COCO's mask IoUs, ``(num_dets, num_gts)``.
        det_rles (list[dict]): The detections' masks (rows).
        gt_rles (list[dict]): The ground truth's masks (columns).
        crowd (np.ndarray): Whether each column is a crowd region,
            ``(num_gts, )`` bool.
        dilation_ratio (float): Band width over the image diagonal.
            Defaults to :data:`DILATION_RATIO`.

    Returns:
        np.ndarray: ``(num_dets, num_gts)`` float64.
    """
    ious = np.array(mask_ious, dtype=np.float64, copy=True)
    keep = ~np.asarray(crowd, bool)
    if not ious.size or not keep.any():
        return ious
    gts = [rle for rle, k in zip(gt_rles, keep) if k]
    bands = mask_util.iou(boundary_rles(det_rles, dilation_ratio),
                          boundary_rles(gts, dilation_ratio), [0] * len(gts))
    bands = np.asarray(bands, dtype=np.float64).reshape(len(det_rles),
                                                        len(gts))
    ious[:, keep] = np.minimum(ious[:, keep], bands)
    return ious
