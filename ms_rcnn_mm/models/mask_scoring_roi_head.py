"""The RoI head of Mask Scoring R-CNN: Mask R-CNN plus a MaskIoU branch."""
from contextlib import contextmanager
from typing import Iterator, List, Optional, Tuple

import torch
from mmdet.models.roi_heads import StandardRoIHead
from mmdet.models.task_modules.samplers import SamplingResult
from mmdet.structures import SampleList
from mmdet.structures.bbox import bbox2roi
from mmdet.utils import ConfigType, InstanceList
from torch import Tensor
from torch.nn.modules.utils import _pair

from ..registry import MODELS
from .config_check import check_keys
from .mask_iou_head import MaskIoUHead


@contextmanager
def recording(obj: object, method: str) -> Iterator[list]:
    """Record what ``obj.method`` returns while the block runs.

    Lets this head reuse the parent's ``mask_loss`` and ``predict_mask`` as
    they are and still read their intermediate results (the mask targets,
    the mask features), instead of copying the parents' bodies or computing
    those results twice.
    """
    calls = []
    original = getattr(obj, method)

    def record(*args, **kwargs):
        calls.append(original(*args, **kwargs))
        return calls[-1]

    setattr(obj, method, record)
    try:
        yield calls
    finally:
        delattr(obj, method)


def select_class(preds: Tensor, labels: Tensor) -> Tensor:
    """Pick each row's channel of its label; class-agnostic when 1 channel.

    Args:
        preds (Tensor): ``(n, C, ...)`` per-class predictions.
        labels (Tensor): ``(n, )`` labels.

    Returns:
        Tensor: ``(n, ...)``.
    """
    if preds.size(1) == 1:
        return preds[:, 0]
    return preds[torch.arange(preds.size(0), device=preds.device), labels]


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
      uses to rank masks for segm AP.

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
        self.mask_iou_head = MODELS.build(mask_iou_head)
        if not isinstance(self.mask_iou_head, MaskIoUHead):
            raise TypeError(
                'mask_iou_head must be ms_rcnn_mm.MaskIoUHead, got '
                f'{type(self.mask_iou_head).__module__}.'
                f'{type(self.mask_iou_head).__name__} from type='
                f"{mask_iou_head['type']!r}; write "
                "type='ms_rcnn_mm.MaskIoUHead'")
        self.rescore_boxes = rescore_boxes
        self._check_consistency()

    def _check_consistency(self) -> None:
        """Reject heads that disagree, before a forward would."""
        classes = {
            name: getattr(getattr(self, name), 'num_classes', None)
            for name in ('bbox_head', 'mask_head', 'mask_iou_head')
        }
        if len(set(classes.values())) > 1:
            raise ValueError(
                'num_classes differs between the heads: ' + ', '.join(
                    f'{name}.num_classes={value}'
                    for name, value in classes.items()) +
                '; set the same value in all three')
        roi_layer = self.mask_roi_extractor.roi_layers[0]
        out_size = tuple(_pair(roi_layer.output_size))
        feat_size = tuple(_pair(self.mask_iou_head.roi_feat_size))
        if feat_size != out_size:
            raise ValueError(
                'mask_iou_head.roi_feat_size='
                f'{self.mask_iou_head.roi_feat_size} does not match the '
                'output of the mask RoI extractor, '
                f'mask_roi_extractor.roi_layer.output_size={out_size}')

    def _mask_iou_forward(self, mask_results: dict,
                          labels: Tensor) -> Tuple[Tensor, Tensor]:
        """MaskIoU of each RoI's mask of class ``labels``.

        Returns:
            tuple[Tensor, Tensor]: the selected mask logits ``(n, h, w)`` and
            the predicted IoUs of all classes ``(n, num_classes)``.
        """
        mask_preds = select_class(mask_results['mask_preds'], labels)
        return mask_preds, self.mask_iou_head(mask_results['mask_feats'],
                                              mask_preds)

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
        _, mask_iou_preds = self._mask_iou_forward(mask_results, labels)
        return (cls_score, bbox_results['bbox_pred'],
                mask_results['mask_preds'], mask_iou_preds)

    def mask_loss(self, x: Tuple[Tensor],
                  sampling_results: List[SamplingResult], bbox_feats: Tensor,
                  batch_gt_instances: InstanceList) -> dict:
        """The parent's mask loss plus ``loss_mask_iou`` on positive RoIs.

        Returns:
            dict: As :meth:`StandardRoIHead.mask_loss`, with
            ``loss_mask_iou`` added to ``loss_mask``.
        """
        with recording(self.mask_head, 'loss_and_target') as calls:
            mask_results = super().mask_loss(x, sampling_results, bbox_feats,
                                             batch_gt_instances)
        if mask_results['loss_mask'] is None:
            return mask_results
        labels = torch.cat([res.pos_gt_labels for res in sampling_results])
        mask_preds, mask_iou_preds = self._mask_iou_forward(
            mask_results, labels)
        mask_iou_loss = self.mask_iou_head.loss_and_target(
            select_class(mask_iou_preds, labels), mask_preds,
            calls[-1]['mask_targets'], sampling_results, batch_gt_instances,
            self.train_cfg)
        mask_results['loss_mask'].update(
            loss_mask_iou=mask_iou_loss['loss_mask_iou'])
        return mask_results

    def predict_mask(self,
                     x: Tuple[Tensor],
                     batch_img_metas: List[dict],
                     results_list: InstanceList,
                     rescale: bool = False) -> InstanceList:
        """The parent's masks, then the MaskIoU of every detection.

        Returns:
            list[InstanceData]: Per image, the parent's fields plus
            ``mask_ious`` and ``mask_scores`` (length 0 when nothing was
            detected).
        """
        with recording(self, '_mask_forward') as calls:
            results_list = super().predict_mask(x, batch_img_metas,
                                                results_list, rescale)
        if not calls:  # no detection in the batch
            for results in results_list:
                results.mask_ious = results.scores.new_zeros((0, ))
                results.mask_scores = results.scores.new_zeros((0, ))
            return results_list
        labels = torch.cat([res.labels for res in results_list])
        _, mask_iou_preds = self._mask_iou_forward(calls[-1], labels)
        return self.mask_iou_head.predict_by_feat(
            mask_iou_preds.split([len(res) for res in results_list]),
            results_list, rescore_boxes=self.rescore_boxes)
