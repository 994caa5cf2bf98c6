"""The MaskIoU head of Mask Scoring R-CNN (arXiv 1903.00241, Sec. 3.2)."""
import inspect
import math
from typing import List, Optional, Sequence, Tuple

import torch
from mmdet.models.roi_heads.mask_heads import MaskIoUHead as MMDetMaskIoUHead
from mmdet.models.task_modules.samplers import SamplingResult
from mmdet.utils import ConfigType, InstanceList
from torch import Tensor

from ..registry import MODELS
from .area_ratio import area_ratios
from .config_check import check_keys


def logit(probability: float) -> float:
    """The logit of ``probability``: ``sigmoid(x) > p`` iff
    ``x > logit(p)``, exactly, without a pass of sigmoids."""
    if probability <= 0:
        return -math.inf
    if probability >= 1:
        return math.inf
    return math.log(probability / (1 - probability))


def overlap_counts(mask_preds: Tensor, mask_targets: Tensor,
                   logit_thr: float) -> Tuple[Tensor, Tensor, Tensor]:
    """Pixels of each binarised prediction (``logit > logit_thr``), of its
    binary target (``> 0.5``) and of both.

    On the CPU the comparisons run in NumPy: for 256 28x28 masks torch's
    float comparison took 50-100 us, NumPy's 15 us.

    Args:
        mask_preds (Tensor): ``(n, h, w)`` mask logits.
        mask_targets (Tensor): ``(n, h, w)`` binary targets.
        logit_thr (float): Binarisation threshold on the logits.

    Returns:
        tuple[Tensor, Tensor, Tensor]: ``(n, )`` int32 counts.
    """
    preds = mask_preds.detach().flatten(1).float()
    targets = mask_targets.detach().flatten(1).float()
    if preds.device.type == 'cpu':
        binary = torch.from_numpy(preds.numpy() > logit_thr)
        target = torch.from_numpy(targets.numpy() > 0.5)
    else:
        binary, target = preds > logit_thr, targets > 0.5
    return tuple(
        pixels.view(torch.uint8).sum(1, dtype=torch.int32)
        for pixels in (binary, target, binary & target))


@MODELS.register_module()
class MaskIoUHead(MMDetMaskIoUHead):
    """Regresses the IoU between a predicted mask and its ground truth.

    The architecture, the constructor arguments and the ``state_dict`` are
    mmdet 3.3.0's ``MaskIoUHead`` (so its model-zoo checkpoints load as they
    are): the RoI feature (``in_channels x roi_feat_size^2``) concatenated
    with the 2x2 max-pooled mask probability of the target class, ``num_convs``
    3x3 convs (the last with stride 2), ``num_fcs`` FCs and one IoU per class.
    What differs is in the targets and the prediction:

    - the predicted mask is binarised at the probability
      ``rcnn_train_cfg.mask_thr_binary``, not at that value of the logits;
    - the whole-instance area comes from summed-area tables
      (:mod:`.area_ratio`), with no loop over proposals;
    - :meth:`predict_by_feat` adds ``mask_ious`` and ``mask_scores`` and
      leaves the classification ``scores`` alone.

    Loss. The default, ``MSELoss(loss_weight=0.5)`` averaged over the RoIs
    whose target exceeds ``loss_target_thr=0.0``, is mmdet's convention. It
    is the paper's "l2 loss with weight 1" written as ``1/2 * (p - t)^2``
    averaged over positive RoIs; RoIs whose predicted mask misses the ground
    truth entirely (target 0) are left out, as in mmdet. Set
    ``loss_target_thr=None`` to train on every positive RoI.

    Args:
        num_convs (int): Number of 3x3 convs. Defaults to 4.
        num_fcs (int): Number of hidden FCs. Defaults to 2.
        roi_feat_size (int): Side of the RoI feature. Defaults to 14.
        in_channels (int): Channels of the RoI feature. Defaults to 256.
        conv_out_channels (int): Channels of the convs. Defaults to 256.
        fc_out_channels (int): Width of the FCs. Defaults to 1024.
        num_classes (int): Number of foreground classes. Defaults to 80.
        loss_iou (dict): Config of the regression loss.
            Defaults to ``dict(type='MSELoss', loss_weight=0.5)``.
        loss_target_thr (float, optional): Only RoIs whose target is above
            it enter the loss; ``None`` keeps them all. Defaults to 0.0.
        init_cfg (dict or list[dict], optional): Initialisation, as mmdet's.

    Raises:
        TypeError: a config key that is none of the above (the message lists
            the valid keys).
    """

    def __init__(self,
                 *args,
                 loss_target_thr: Optional[float] = 0.0,
                 **kwargs) -> None:
        check_keys(type(self), kwargs)
        super().__init__(*args, **kwargs)
        self.loss_target_thr = loss_target_thr
        arguments = inspect.signature(MMDetMaskIoUHead.__init__).bind(
            self, *args, **kwargs)
        arguments.apply_defaults()
        #: side of the RoI feature it takes (mmdet's head does not keep it)
        self.roi_feat_size = arguments.arguments['roi_feat_size']

    def loss_and_target(self, mask_iou_pred: Tensor, mask_preds: Tensor,
                        mask_targets: Tensor,
                        sampling_results: List[SamplingResult],
                        batch_gt_instances: InstanceList,
                        rcnn_train_cfg: ConfigType) -> dict:
        """Compute the MaskIoU loss of the positive RoIs.

        Args:
            mask_iou_pred (Tensor): Predicted IoU of each positive RoI's
                target class, ``(num_pos, )``.
            mask_preds (Tensor): Target-class mask logits,
                ``(num_pos, mask_size, mask_size)``.
            mask_targets (Tensor): Binary mask targets, same shape.
            sampling_results (list[SamplingResult]): Per-image samples.
            batch_gt_instances (list[InstanceData]): Per-image ground truth
                with ``masks``.
            rcnn_train_cfg (ConfigDict): R-CNN ``train_cfg``
                (``mask_thr_binary``).

        Returns:
            dict: ``loss_mask_iou`` (a scalar, 0 with the graph kept when no
            RoI is selected) and ``mask_iou_targets`` ``(num_pos, )``.
        """
        targets = self.get_targets(sampling_results, batch_gt_instances,
                                   mask_preds, mask_targets, rcnn_train_cfg)
        # selection by weight, not by indexing: no device-host sync, and a
        # loss of 0 that keeps the graph when no RoI is selected
        selected = torch.ones_like(targets) if self.loss_target_thr is None \
            else (targets > self.loss_target_thr).float()
        loss = self.loss_iou(
            mask_iou_pred.float(),
            targets,
            weight=selected,
            avg_factor=selected.sum())
        return dict(loss_mask_iou=loss, mask_iou_targets=targets)

    def get_targets(self, sampling_results: List[SamplingResult],
                    batch_gt_instances: InstanceList, mask_preds: Tensor,
                    mask_targets: Tensor,
                    rcnn_train_cfg: ConfigType) -> Tensor:
        """IoU of each binarised predicted mask with its whole instance.

        The intersection is counted inside the proposal on the
        ``mask_size`` grid; the instance's whole area is its area inside the
        proposal on that grid divided by the area ratio (inside / whole) at
        image resolution.

        Args:
            sampling_results (list[SamplingResult]): Per-image samples.
            batch_gt_instances (list[InstanceData]): Per-image ground truth
                with ``masks`` (BitmapMasks, PolygonMasks or a tensor).
            mask_preds (Tensor): Target-class mask logits of the positive
                RoIs, ``(num_pos, mask_size, mask_size)``.
            mask_targets (Tensor): Their binary mask targets, same shape.
            rcnn_train_cfg (ConfigDict): R-CNN ``train_cfg``; its
                ``mask_thr_binary`` is a probability.

        Returns:
            Tensor: ``(num_pos, )`` float32 targets in ``[0, 1]``; 0 where
            the instance has no pixel inside the proposal.
        """
        ratios = area_ratios([res.pos_priors for res in sampling_results],
                             [res.pos_assigned_gt_inds
                              for res in sampling_results],
                             [gt.masks for gt in batch_gt_instances])
        if ratios.numel() != mask_targets.size(0):
            raise ValueError(
                f'{mask_targets.size(0)} mask targets for {ratios.numel()} '
                'positive proposals')
        pred_area, target_area, overlap = overlap_counts(
            mask_preds, mask_targets, logit(rcnn_train_cfg.mask_thr_binary))
        # ratio 0 (no instance pixel inside the proposal) makes the whole
        # area inf (IoU 0) or 0 / 0; an empty union is 0 / 0 too: NaN -> 0
        union = pred_area + target_area / ratios - overlap
        return torch.nan_to_num(overlap / union, nan=0.0)

    def predict_by_feat(self,
                        mask_iou_preds: Sequence[Tensor],
                        results_list: InstanceList,
                        rescore_boxes: bool = False) -> InstanceList:
        """Attach the predicted MaskIoU and the mask score to detections.

        Args:
            mask_iou_preds (Sequence[Tensor]): Per image,
                ``(num_det, num_classes)`` predicted IoUs.
            results_list (list[InstanceData]): Per-image detections with
                ``scores`` and ``labels``.
            rescore_boxes (bool): Also overwrite ``scores`` with the mask
                score, as mmdet 3.x does (for comparisons only).
                Defaults to False.

        Returns:
            list[InstanceData]: The same detections, with ``mask_ious``
            (predicted MaskIoU of the predicted class, clamped to [0, 1]) and
            ``mask_scores`` (``scores * mask_ious``), both ``(num_det, )``.
        """
        for results, iou_pred in zip(results_list, mask_iou_preds):
            labels = results.labels
            ious = iou_pred[torch.arange(len(labels), device=labels.device),
                            labels].float().clamp(0, 1)
            results.mask_ious = ious
            results.mask_scores = results.scores * ious
            if rescore_boxes:
                results.scores = results.mask_scores
        return results_list
