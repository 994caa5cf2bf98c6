"""Mask Scoring R-CNN's test-time graph in operators that ONNX has.

:class:`ONNXMaskScoringRCNN` wraps a trained :class:`MaskScoringRCNN` (with
the standard, non-cascade :class:`MaskScoringRoIHead`) and computes what its
``predict`` computes for one image, with tensor operations only: no Python
branch on a value, so that ``torch.onnx.export`` (TorchScript tracing)
records a graph that holds for every image of the export size and any
number of detections. The submodules (backbone, neck, heads) are the
model's own; what is written here is the glue mmdet runs in Python between
them: anchors, RPN top-k and NMS, multi-level RoIAlign, multi-class NMS and
the label's channel of the masks and MaskIoUs.
"""
from typing import Dict, Sequence, Tuple

import torch
from mmcv.ops import RoIAlign
from mmdet.models.dense_heads import RPNHead
from mmdet.models.roi_heads.roi_extractors import SingleRoIExtractor
from mmdet.models.task_modules.coders import DeltaXYWHBBoxCoder
from mmdet.models.task_modules.coders.delta_xywh_bbox_coder import delta2bbox
from torch import Tensor, nn

from ..models.mask_iou_head import maskness, select_class
from ..models.mask_scoring_roi_head import MaskScoringRoIHead
from .onnx_ops import RoIAlignONNX, nms_indices

#: the outputs of the exported graph, in order; each has one row per
#: detection, highest score first
OUTPUT_NAMES = ('boxes', 'labels', 'scores', 'mask_ious', 'mask_scores',
                'maskness', 'masks')
#: RPN scores of boxes dropped by ``min_bbox_size``: below the NMS score
#: threshold, which every sigmoid score exceeds
_DROPPED, _KEEP_ALL = -1.0, -0.5


def class_offset_nms(boxes: Tensor, scores: Tensor, groups: Tensor,
                     max_out: int, iou_thr: float, score_thr: float) -> Tensor:
    """mmcv's ``batched_nms``: NMS within each group, by shifting each
    group's boxes beyond the others' (by the largest coordinate of the
    candidates plus one, as mmcv does).

    Returns:
        Tensor: ``(k, )`` indices of the kept boxes, highest score first.
    """
    candidate = scores > score_thr
    largest = torch.where(candidate, boxes.max(1)[0],
                          torch.zeros_like(scores)).max()
    shifted = boxes + (groups.to(boxes) * (largest + 1))[:, None]
    return nms_indices(shifted, scores, max_out, iou_thr, score_thr)


def decode(coder: DeltaXYWHBBoxCoder, priors: Tensor, deltas: Tensor,
           image_shape: Tuple[int, int]) -> Tensor:
    """``coder.decode``, through mmdet's eager ``delta2bbox`` (the coder's
    ONNX branch imports a module mmdet 3 no longer has)."""
    return delta2bbox(priors, deltas, coder.means, coder.stds, image_shape,
                      clip_border=coder.clip_border,
                      add_ctr_clamp=coder.add_ctr_clamp,
                      ctr_clamp=coder.ctr_clamp)


def check_exportable(model: nn.Module) -> None:
    """Reject, with what is unsupported, a model this graph does not
    reproduce.

    Raises:
        TypeError: not an FPN detector with an RPN and a
            :class:`MaskScoringRoIHead` over single-level RoI extractors.
        ValueError: an RoI layer other than mmcv's average-pooled, aligned
            RoIAlign, or an NMS other than plain NMS.
    """
    roi_head = getattr(model, 'roi_head', None)
    if type(roi_head) is not MaskScoringRoIHead or \
            not isinstance(getattr(model, 'rpn_head', None), RPNHead):
        raise TypeError(
            'ONNX export supports ms_rcnn_mm.MaskScoringRoIHead with an '
            f'RPNHead; got {type(roi_head).__name__} (cascade heads do not '
            'export yet)')
    for name in ('bbox_roi_extractor', 'mask_roi_extractor'):
        extractor = getattr(roi_head, name)
        if not isinstance(extractor, SingleRoIExtractor):
            raise TypeError(f'roi_head.{name} must be SingleRoIExtractor, '
                            f'got {type(extractor).__name__}')
        for layer in extractor.roi_layers:
            if not (isinstance(layer, RoIAlign) and layer.aligned
                    and layer.pool_mode == 'avg'):
                raise ValueError(
                    f'roi_head.{name}: ONNX RoiAlign reproduces mmcv '
                    f'RoIAlign(aligned=True, pool_mode="avg"), got {layer}')
    for name, head in (('rpn_head', model.rpn_head),
                       ('bbox_head', roi_head.bbox_head)):
        if type(head.bbox_coder) is not DeltaXYWHBBoxCoder:
            raise TypeError(f'{name}.bbox_coder must be DeltaXYWHBBoxCoder, '
                            f'got {type(head.bbox_coder).__name__}')
    for stage in ('rpn', 'rcnn'):
        nms = model.test_cfg[stage].nms
        if nms.get('type', 'nms') != 'nms':
            raise ValueError(f'test_cfg.{stage}.nms.type={nms["type"]!r}: '
                             "only 'nms' exports")


class ONNXMaskScoringRCNN(nn.Module):
    """The test-time graph of a Mask Scoring R-CNN for one image.

    Input: ``(1, 3, H, W)`` float32, the image as the model's data
    preprocessor returns it (normalised, channels in the model's order,
    padded). Outputs (:data:`OUTPUT_NAMES`), ``k`` detections, in the
    input's pixel frame (boxes clipped to it):

    - ``boxes`` ``(k, 4)`` float32 ``x1, y1, x2, y2``; ``labels`` ``(k, )``
      int64; ``scores`` ``(k, )`` classification scores;
    - ``mask_ious``, ``mask_scores`` (``scores * mask_ious``), ``maskness``
      ``(k, )``, as ``MaskScoringRoIHead.predict`` gives them;
    - ``masks`` ``(k, 28, 28)``: the mask probability of the label's class
      inside the box (mmdet's ``_do_paste_mask`` pastes it into the image).

    Args:
        model (MaskScoringRCNN): The trained detector, in eval mode; its
            ``test_cfg`` sets the thresholds and the numbers of boxes.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        check_exportable(model)
        self.model = model

    def forward(self, inputs: Tensor) -> Tuple[Tensor, ...]:
        image_shape = tuple(inputs.shape[-2:])
        feats = self.model.extract_feat(inputs)
        proposals = self.proposals(feats, image_shape)
        boxes, scores, labels = self.detections(feats, proposals,
                                                image_shape)
        outputs = dict(boxes=boxes, labels=labels, scores=scores)
        outputs.update(self.mask_outputs(feats, boxes, labels))
        outputs['mask_scores'] = scores * outputs['mask_ious']
        return tuple(outputs[name] for name in OUTPUT_NAMES)

    def proposals(self, feats: Sequence[Tensor],
                  image_shape: Tuple[int, int]) -> Tensor:
        """RPNHead.predict for one image: per level the ``nms_pre`` best
        anchors, decoded, small boxes dropped, NMS per level, the
        ``max_per_img`` best. Returns ``(n, 4)`` boxes."""
        head, cfg = self.model.rpn_head, self.model.test_cfg.rpn
        cls_scores, bbox_preds = head(feats)
        priors = head.prior_generator.grid_priors(
            [score.shape[-2:] for score in cls_scores],
            device=feats[0].device)
        level_scores, level_deltas, level_priors, levels = [], [], [], []
        for level, (cls_score, bbox_pred, prior) in enumerate(
                zip(cls_scores, bbox_preds, priors)):
            score = cls_score[0].permute(1, 2, 0).reshape(-1).sigmoid()
            delta = bbox_pred[0].permute(1, 2, 0).reshape(-1, 4)
            if 0 < cfg.get('nms_pre', -1) < score.numel():
                score, best = score.topk(cfg.nms_pre)
                delta, prior = delta[best], prior[best]
            level_scores.append(score)
            level_deltas.append(delta)
            level_priors.append(prior)
            levels.append(torch.full_like(score, level, dtype=torch.long))
        boxes = decode(head.bbox_coder, torch.cat(level_priors),
                       torch.cat(level_deltas), image_shape)
        scores = torch.cat(level_scores)
        min_size = cfg.get('min_bbox_size', -1)
        if min_size >= 0:
            wh = boxes[:, 2:] - boxes[:, :2]
            scores = torch.where((wh > min_size).all(1), scores,
                                 torch.full_like(scores, _DROPPED))
        keep = class_offset_nms(boxes, scores, torch.cat(levels),
                                cfg.max_per_img, cfg.nms.iou_threshold,
                                _KEEP_ALL)
        return boxes[keep]

    def detections(self, feats: Sequence[Tensor], proposals: Tensor,
                   image_shape: Tuple[int, int]
                   ) -> Tuple[Tensor, Tensor, Tensor]:
        """BBoxHead.predict_by_feat for one image: softmax scores, boxes
        decoded per class, multi-class NMS. Returns boxes, scores and
        labels."""
        roi_head, cfg = self.model.roi_head, self.model.test_cfg.rcnn
        bbox_head = roi_head.bbox_head
        cls_score, bbox_pred = bbox_head(
            roi_feats(roi_head.bbox_roi_extractor, feats, proposals))
        scores = cls_score.softmax(-1)[:, :-1]
        num_rois, num_classes = scores.shape
        classes = 1 if bbox_head.reg_class_agnostic else num_classes
        boxes = decode(
            bbox_head.bbox_coder,
            proposals[:, None].expand(-1, classes, 4).reshape(-1, 4),
            bbox_pred.reshape(-1, 4), image_shape)
        boxes = boxes.view(num_rois, classes, 4).expand(
            -1, num_classes, 4).reshape(-1, 4)
        labels = torch.arange(num_classes, device=scores.device).repeat(
            num_rois)
        scores = scores.reshape(-1)
        keep = class_offset_nms(boxes, scores, labels, cfg.max_per_img,
                                cfg.nms.iou_threshold, cfg.score_thr)
        return boxes[keep], scores[keep], labels[keep]

    def mask_outputs(self, feats: Sequence[Tensor], boxes: Tensor,
                     labels: Tensor) -> Dict[str, Tensor]:
        """The mask head and the MaskIoU head on the detections:
        ``masks``, ``mask_ious`` and ``maskness``."""
        roi_head = self.model.roi_head
        mask_feats = roi_feats(roi_head.mask_roi_extractor, feats, boxes)
        logits = select_class(roi_head.mask_head(mask_feats), labels)
        mask_ious = select_class(
            roi_head.mask_iou_head(mask_feats, logits), labels)
        thr = self.model.test_cfg.rcnn.mask_thr_binary
        return dict(masks=logits.sigmoid(), mask_ious=mask_ious.clamp(0, 1),
                    maskness=maskness(logits, thr))


def roi_feats(extractor: SingleRoIExtractor, feats: Sequence[Tensor],
              boxes: Tensor) -> Tensor:
    """SingleRoIExtractor on the boxes ``(n, 4)`` of one image: each box
    pooled from the level its scale maps it to.

    Every level pools every box, those of other levels shrunk to a point
    (cheap for an adaptive sampling ratio), and a mask keeps each box's own
    level: the same values as mmdet's gather-scatter, with no
    data-dependent shape in the graph."""
    num_levels = extractor.num_inputs
    levels = extractor.map_roi_levels(
        torch.cat([torch.zeros_like(boxes[:, :1]), boxes], 1), num_levels)
    batch_inds = torch.zeros_like(levels)
    pooled = 0
    for level, layer in enumerate(extractor.roi_layers[:num_levels]):
        own = (levels == level).to(boxes)
        feat = RoIAlignONNX.apply(feats[level], boxes * own[:, None],
                                  batch_inds, layer.output_size[0],
                                  float(layer.spatial_scale),
                                  int(layer.sampling_ratio))
        pooled = pooled + feat * own[:, None, None, None]
    return pooled
