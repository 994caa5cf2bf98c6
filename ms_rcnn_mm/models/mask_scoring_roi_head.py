"""The RoI head of Mask Scoring R-CNN: Mask R-CNN plus a MaskIoU branch."""
from typing import List, Optional, Tuple

import torch
from mmdet.models.roi_heads import StandardRoIHead
from mmdet.models.task_modules.samplers import SamplingResult
from mmdet.structures import SampleList
from mmdet.structures.bbox import bbox2roi
from mmdet.utils import ConfigType, InstanceList
from torch import Tensor

from ..registry import MODELS
from .config_check import check_keys
from .mask_iou_branch import (build_mask_iou_head, check_mask_iou_head,
                              with_empty_scores)
from .mask_iou_head import select_class


@MODELS.register_module()
class MaskScoringRoIHead(StandardRoIHead):
    """Mask R-CNN's RoI head with a MaskIoU head that scores each mask.

    Training adds ``loss_mask_iou`` on the positive RoIs. At test time every
    detection (``test_cfg.max_per_img``, 100 by default) goes through the mask
    head and the MaskIoU head, and gets

    - ``scores``: the classification score, unchanged (box AP is Mask
      R-CNN's);
    - ``mask_ious``: the predicted MaskIoU of its class, in [0, 1];
    - ``mask_scores``: ``scores * mask_ious``, which mmdet's ``CocoMetric``
      uses to rank masks for segm AP;
    - ``maskness``: SOLOv2's training-free mask quality (the mean
      probability of the mask's pixels above ``test_cfg.mask_thr_binary``,
      before pasting), a baseline for ``mask_ious``.

    The head keeps no state between calls: one model can predict in several
    threads at once.

    Args:
        mask_iou_head (dict): Config of the MaskIoU head; its type must be
            ``'ms_rcnn_mm.MaskIoUHead'`` (or a subclass of it).
        rescore_boxes (bool): Overwrite ``scores`` with ``mask_scores`` as
            mmdet 3.x does, so box AP is rescored too. For comparisons only.
            Defaults to False.
        **kwargs: The arguments of :class:`StandardRoIHead`.

    Raises:
        TypeError: an unknown config key (the message lists the valid ones),
            or a MaskIoU head of another type.
        ValueError: ``num_classes`` differs between ``bbox_head``,
            ``mask_head`` and ``mask_iou_head``, or
            ``mask_iou_head.roi_feat_size`` is not the mask RoI extractor's
            output size.
    """

    def __init__(self,
                 mask_iou_head: ConfigType,
                 rescore_boxes: bool = False,
                 **kwargs) -> None:
        check_keys(type(self), kwargs)
        super().__init__(**kwargs)
        self.mask_iou_head = build_mask_iou_head(mask_iou_head)
        self.rescore_boxes = rescore_boxes
        check_mask_iou_head(self.mask_iou_head, self.bbox_head,
                            self.mask_head, self.mask_roi_extractor)

    def forward(self,
                x: Tuple[Tensor],
                rpn_results_list: InstanceList,
                batch_data_samples: Optional[SampleList] = None) -> tuple:
        """Tensor-mode forward on every RoI it is given.

        Returns:
            tuple: ``cls_score (n, C + 1)``, ``bbox_pred``, ``mask_preds
            (n, C, h, w)`` and ``mask_iou_preds (n, C)`` where each RoI's
            mask IoU is that of its highest-scoring foreground class.
        """
        rois = bbox2roi([res.bboxes for res in rpn_results_list])
        bbox_results = self._bbox_forward(x, rois)
        mask_results = self._mask_forward(x, rois)
        cls_score = bbox_results['cls_score']
        labels = cls_score[:, :self.bbox_head.num_classes].argmax(1)
        mask_iou_preds = self.mask_iou_head(
            mask_results['mask_feats'],
            select_class(mask_results['mask_preds'], labels))
        return (cls_score, bbox_results['bbox_pred'],
                mask_results['mask_preds'], mask_iou_preds)

    def _positive_mask_forward(self, x: Tuple[Tensor],
                               sampling_results: List[SamplingResult],
                               bbox_feats: Tensor) -> dict:
        """The mask branch on the positive RoIs: from the mask RoI extractor,
        or from their bbox features when the extractor is shared."""
        if not self.share_roi_extractor:
            return self._mask_forward(
                x, bbox2roi([res.pos_priors for res in sampling_results]))
        # each image's sampled RoIs are its positives, then its negatives
        pos_inds = torch.cat([
            torch.arange(len(res.priors), device=bbox_feats.device) <
            len(res.pos_priors) for res in sampling_results
        ])
        return self._mask_forward(x, pos_inds=pos_inds, bbox_feats=bbox_feats)

    def mask_loss(self, x: Tuple[Tensor],
                  sampling_results: List[SamplingResult], bbox_feats: Tensor,
                  batch_gt_instances: InstanceList) -> dict:
        """The mask loss and ``loss_mask_iou`` of the positive RoIs.

        Returns:
            dict: ``mask_feats``, ``mask_preds``, ``mask_targets`` and
            ``loss_mask`` (``loss_mask`` and ``loss_mask_iou``).
        """
        mask_results = self._positive_mask_forward(x, sampling_results,
                                                   bbox_feats)
        mask_results.update(self.mask_head.loss_and_target(
            mask_preds=mask_results['mask_preds'],
            sampling_results=sampling_results,
            batch_gt_instances=batch_gt_instances,
            rcnn_train_cfg=self.train_cfg))
        mask_results['loss_mask'].update(self.mask_iou_head.loss(
            mask_results, sampling_results, batch_gt_instances,
            self.train_cfg))
        return mask_results

    def predict_mask(self,
                     x: Tuple[Tensor],
                     batch_img_metas: List[dict],
                     results_list: InstanceList,
                     rescale: bool = False) -> InstanceList:
        """Masks of the detections, then their MaskIoU and maskness.

        Returns:
            list[InstanceData]: Per image, the fields of
            :meth:`StandardRoIHead.predict_mask` plus ``mask_ious``,
            ``mask_scores`` and ``maskness`` (length 0 when nothing was
            detected).
        """
        mask_rois = bbox2roi([res.bboxes for res in results_list])
        if len(mask_rois) == 0:
            return [with_empty_scores(res) for res in super().predict_mask(
                x, batch_img_metas, results_list, rescale)]
        mask_results = self._mask_forward(x, mask_rois)
        results_list = self.mask_head.predict_by_feat(
            mask_preds=mask_results['mask_preds'].split(
                [len(res) for res in results_list]),
            results_list=results_list,
            batch_img_metas=batch_img_metas,
            rcnn_test_cfg=self.test_cfg,
            rescale=rescale)
        return self.mask_iou_head.predict(
            mask_results, results_list, self.test_cfg,
            rescore_boxes=self.rescore_boxes)
