"""Mask scoring on the cascade RoI heads: Cascade Mask R-CNN and HTC.

The MaskIoU head reads the mask RoI features of the last stage (the
extractors hold no weights, so every stage's are the same for the same
RoIs) and one mask of the detection's class. Two choices are the cascade's
own, set in the config and documented in ``docs/cascade.md``:

- ``mask_iou_stages``: which positives train it, ``'all'`` (every
  stage's, each loss weighted by its stage's ``stage_loss_weights``, as the
  stage's other losses are; the default, which correlated better on every
  seed measured) or ``'last'`` (the last stage's);
- ``mask_iou_input``: which mask it reads at inference, ``'merged'`` (the
  stage-averaged probabilities the cascade pastes) or ``'last'`` (the last
  stage's).

The targets binarise each stage's predicted masks at its train config's
``mask_thr_binary``, or, where mmdet's cascade configs have none, at
``test_cfg.mask_thr_binary``: as the masks are binarised at inference.
"""
from typing import List, Optional, Sequence, Tuple

import torch
from mmdet.models.roi_heads import CascadeRoIHead, HybridTaskCascadeRoIHead
from mmdet.models.task_modules.samplers import SamplingResult
from mmdet.models.test_time_augs import merge_aug_masks
from mmdet.structures.bbox import bbox2roi
from mmdet.utils import ConfigType, InstanceList
from mmengine.config import ConfigDict
from torch import Tensor

from ..registry import MODELS
from .config_check import check_keys
from .mask_iou_branch import (build_mask_iou_head, check_mask_iou_head,
                              with_empty_scores)

#: values of ``mask_iou_stages`` and ``mask_iou_input``
MASK_IOU_STAGES = ('all', 'last')
MASK_IOU_INPUTS = ('merged', 'last')
#: probabilities are clamped this far from 0 and 1 before their logit
PROBABILITY_EPS = 1e-6


class CascadeMaskScoringMixin:
    """The MaskIoU branch of a cascade RoI head; the heads below add only
    how they get each stage's mask logits.

    Args:
        mask_iou_head (dict): Config of ``ms_rcnn_mm.MaskIoUHead``.
        mask_iou_stages (str): ``'all'`` or ``'last'`` (module docstring).
            Defaults to ``'all'``.
        mask_iou_input (str): ``'merged'`` or ``'last'`` (module
            docstring). Defaults to ``'merged'``.
        rescore_boxes (bool): Overwrite ``scores`` with ``mask_scores`` (for
            comparisons only). Defaults to False.
        **kwargs: The arguments of the cascade RoI head it is mixed into.

    Raises:
        TypeError: an unknown config key, or a MaskIoU head of another type.
        ValueError: an unknown ``mask_iou_stages`` or ``mask_iou_input``;
            heads that disagree (:func:`check_mask_iou_head`).
    """

    def __init__(self,
                 mask_iou_head: ConfigType,
                 mask_iou_stages: str = 'all',
                 mask_iou_input: str = 'merged',
                 rescore_boxes: bool = False,
                 **kwargs) -> None:
        check_keys(type(self), kwargs)
        super().__init__(**kwargs)
        for name, value, allowed in (
                ('mask_iou_stages', mask_iou_stages, MASK_IOU_STAGES),
                ('mask_iou_input', mask_iou_input, MASK_IOU_INPUTS)):
            if value not in allowed:
                raise ValueError(f'{name}={value!r}; expected one of '
                                 f'{", ".join(map(repr, allowed))}')
        self.mask_iou_head = build_mask_iou_head(mask_iou_head)
        self.mask_iou_stages = mask_iou_stages
        self.mask_iou_input = mask_iou_input
        self.rescore_boxes = rescore_boxes
        check_mask_iou_head(self.mask_iou_head, self.bbox_head[-1],
                            self.mask_head[-1], self.mask_roi_extractor[-1])
        #: each stage's train config, with the threshold of the targets
        self.mask_iou_train_cfg = [
            ConfigDict(cfg, mask_thr_binary=cfg.get(
                'mask_thr_binary', self.test_cfg.mask_thr_binary))
            for cfg in self.train_cfg or ()]

    def _mask_iou_feats(self, x: Tuple[Tensor], rois: Tensor) -> Tensor:
        """The RoI features the MaskIoU head reads."""
        extractor = self.mask_roi_extractor[-1]
        return extractor(x[:extractor.num_inputs], rois)

    def _add_mask_iou_loss(self, stage: int, x: Tuple[Tensor],
                           mask_results: dict,
                           sampling_results: List[SamplingResult],
                           batch_gt_instances: InstanceList) -> dict:
        """``mask_results`` of a stage with ``loss_mask_iou`` added to its
        ``loss_mask`` when the stage trains the MaskIoU head (the cascade's
        ``loss`` weights it by the stage's loss weight)."""
        if self.mask_iou_stages == 'last' and stage != self.num_stages - 1:
            return mask_results
        pos_rois = bbox2roi([res.pos_priors for res in sampling_results])
        scored = dict(mask_results,
                      mask_feats=self._mask_iou_feats(x, pos_rois))
        mask_results['loss_mask'].update(self.mask_iou_head.loss(
            scored, sampling_results, batch_gt_instances,
            self.mask_iou_train_cfg[stage]))
        return mask_results

    def _predict_scored_masks(self, x: Tuple[Tensor], mask_rois: Tensor,
                              stage_logits: Sequence[Tensor],
                              batch_img_metas: List[dict],
                              results_list: InstanceList,
                              rescale: bool) -> InstanceList:
        """Paste the stage-averaged masks, then score them.

        Args:
            mask_rois (Tensor): ``(n, 5)`` RoIs of the batch's detections.
            stage_logits (Sequence[Tensor]): Per stage whose masks are
                averaged, ``(n, num_classes, h, w)`` mask logits.

        Returns:
            list[InstanceData]: As :meth:`CascadeRoIHead.predict_mask`,
            plus ``mask_ious``, ``mask_scores`` and ``maskness``.
        """
        counts = [len(res) for res in results_list]
        stage_probs = [logits.sigmoid().split(counts) for logits in
                       stage_logits]
        merged = [merge_aug_masks([probs[i] for probs in stage_probs], meta)
                  for i, meta in enumerate(batch_img_metas)]
        results_list = self.mask_head[-1].predict_by_feat(
            mask_preds=merged, results_list=results_list,
            batch_img_metas=batch_img_metas, rcnn_test_cfg=self.test_cfg,
            rescale=rescale, activate_map=True)
        mask_preds = stage_logits[-1] if self.mask_iou_input == 'last' else \
            torch.logit(torch.cat(merged), eps=PROBABILITY_EPS)
        return self.mask_iou_head.predict(
            dict(mask_feats=self._mask_iou_feats(x, mask_rois),
                 mask_preds=mask_preds), results_list, self.test_cfg,
            rescore_boxes=self.rescore_boxes)


@MODELS.register_module()
class CascadeMaskScoringRoIHead(CascadeMaskScoringMixin, CascadeRoIHead):
    """Cascade Mask R-CNN's RoI head with a MaskIoU head.

    ``scores`` stay the cascade's classification scores; every detection
    gets ``mask_ious``, ``mask_scores`` (``scores * mask_ious``, which
    ``CocoMetric`` ranks masks by) and ``maskness``, as
    :class:`~ms_rcnn_mm.models.MaskScoringRoIHead`.

    Takes the arguments of :class:`CascadeMaskScoringMixin` and of mmdet's
    ``CascadeRoIHead``.
    """

    def mask_loss(self, stage: int, x: Tuple[Tensor],
                  sampling_results: List[SamplingResult],
                  batch_gt_instances: InstanceList) -> dict:
        """The cascade's mask loss of ``stage``, and the MaskIoU loss."""
        return self._add_mask_iou_loss(
            stage, x,
            super().mask_loss(stage, x, sampling_results,
                              batch_gt_instances), sampling_results,
            batch_gt_instances)

    def predict_mask(self,
                     x: Tuple[Tensor],
                     batch_img_metas: List[dict],
                     results_list: InstanceList,
                     rescale: bool = False) -> InstanceList:
        """The cascade's masks (every stage's, averaged), then their
        MaskIoU and maskness."""
        mask_rois = bbox2roi([res.bboxes for res in results_list])
        if len(mask_rois) == 0:
            return [with_empty_scores(res) for res in super().predict_mask(
                x, batch_img_metas, results_list, rescale)]
        logits = [self._mask_forward(stage, x, mask_rois)['mask_preds']
                  for stage in range(self.num_stages)]
        return self._predict_scored_masks(x, mask_rois, logits,
                                          batch_img_metas, results_list,
                                          rescale)


@MODELS.register_module()
class HTCMaskScoringRoIHead(CascadeMaskScoringMixin,
                            HybridTaskCascadeRoIHead):
    """HTC's RoI head (with or without its semantic branch) with a MaskIoU
    head; outputs and arguments as :class:`CascadeMaskScoringRoIHead`, the
    others those of mmdet's ``HybridTaskCascadeRoIHead``.

    The MaskIoU head reads the mask RoI features before HTC fuses the
    semantic features into them.
    """

    def mask_loss(self,
                  stage: int,
                  x: Tuple[Tensor],
                  sampling_results: List[SamplingResult],
                  batch_gt_instances: InstanceList,
                  semantic_feat: Optional[Tensor] = None) -> dict:
        """HTC's mask loss of ``stage``, and the MaskIoU loss."""
        return self._add_mask_iou_loss(
            stage, x,
            super().mask_loss(stage, x, sampling_results, batch_gt_instances,
                              semantic_feat), sampling_results,
            batch_gt_instances)

    def predict_mask(self,
                     x: Tuple[Tensor],
                     semantic_heat: Tensor,
                     batch_img_metas: List[dict],
                     results_list: InstanceList,
                     rescale: bool = False) -> InstanceList:
        """HTC's masks, then their MaskIoU and maskness (``semantic_heat``
        is mmdet's name for the semantic feature)."""
        mask_rois = bbox2roi([res.bboxes for res in results_list])
        if len(mask_rois) == 0:
            return [with_empty_scores(res) for res in super().predict_mask(
                x, semantic_heat, batch_img_metas, results_list, rescale)]
        logits = self._mask_forward(
            stage=-1, x=x, rois=mask_rois, semantic_feat=semantic_heat,
            training=False)['mask_preds']
        return self._predict_scored_masks(x, mask_rois, logits,
                                          batch_img_metas, results_list,
                                          rescale)
