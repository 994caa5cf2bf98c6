"""The two operators of a two-stage detector that ONNX has natively and torch
does not export by itself: RoIAlign and NMS.

Each is a ``torch.autograd.Function`` whose ``forward`` runs mmcv's compiled
op (so that tracing sees the real values) and whose ``symbolic`` writes the
standard ONNX operator (``RoiAlign`` of opset 16, ``NonMaxSuppression``), so
the exported model needs no custom operator at run time.
"""
import torch
from mmcv.ops import nms, roi_align
from torch import Tensor
from torch.autograd import Function

#: the opset of the exported graphs: 16 is the first whose ``RoiAlign`` has
#: ``coordinate_transformation_mode='half_pixel'`` (mmcv's ``aligned=True``)
OPSET = 17


def _constant(g, value, dtype):
    return g.op('Constant', value_t=torch.tensor(value, dtype=dtype))


class RoIAlignONNX(Function):
    """mmcv's ``roi_align`` (``aligned=True``, average pooling) on one
    feature map, exported as ONNX ``RoiAlign``."""

    @staticmethod
    def forward(ctx, feat: Tensor, boxes: Tensor, batch_inds: Tensor,
                out_size: int, spatial_scale: float,
                sampling_ratio: int) -> Tensor:
        rois = torch.cat([batch_inds[:, None].to(boxes.dtype), boxes], 1)
        return roi_align(feat, rois, out_size, spatial_scale, sampling_ratio,
                         'avg', True)

    @staticmethod
    def symbolic(g, feat, boxes, batch_inds, out_size, spatial_scale,
                 sampling_ratio):
        return g.op(
            'RoiAlign', feat, boxes, batch_inds, mode_s='avg',
            output_height_i=out_size, output_width_i=out_size,
            sampling_ratio_i=sampling_ratio, spatial_scale_f=spatial_scale,
            coordinate_transformation_mode_s='half_pixel')


class NMSONNX(Function):
    """Single-class NMS with ONNX ``NonMaxSuppression``'s contract.

    ``boxes`` ``(1, n, 4)`` corners, ``scores`` ``(1, 1, n)``; returns the
    ``(k, 3)`` int64 rows ``(0, 0, index)`` of the kept boxes, highest score
    first: boxes scoring at most ``score_thr`` are dropped, then each box
    whose IoU with a kept higher-scoring box exceeds ``iou_thr``, and at most
    ``max_out`` are kept.
    """

    @staticmethod
    def forward(ctx, boxes: Tensor, scores: Tensor, max_out: int,
                iou_thr: float, score_thr: float) -> Tensor:
        boxes, scores = boxes[0], scores[0, 0]
        candidates = (scores > score_thr).nonzero()[:, 0]
        _, kept = nms(boxes[candidates], scores[candidates], iou_thr)
        kept = candidates[kept[:max_out].long()]
        rows = kept.new_zeros((len(kept), 3))
        rows[:, 2] = kept
        return rows

    @staticmethod
    def symbolic(g, boxes, scores, max_out, iou_thr, score_thr):
        return g.op('NonMaxSuppression', boxes, scores,
                    _constant(g, [max_out], torch.int64),
                    _constant(g, [iou_thr], torch.float32),
                    _constant(g, [score_thr], torch.float32))


def nms_indices(boxes: Tensor, scores: Tensor, max_out: int, iou_thr: float,
                score_thr: float) -> Tensor:
    """Indices ``(k, )`` of the boxes ``(n, 4)`` that NMS keeps, highest
    score first (:class:`NMSONNX` on one image and one class)."""
    return NMSONNX.apply(boxes[None], scores[None, None], max_out, iou_thr,
                         score_thr)[:, 2]
