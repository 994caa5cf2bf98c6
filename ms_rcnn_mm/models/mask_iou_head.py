"""The MaskIoU head of Mask Scoring R-CNN (arXiv 1903.00241, Sec. 3.2)."""
import math
from typing import List, Optional, Sequence, Tuple

import torch
from mmdet.models.roi_heads.mask_heads import MaskIoUHead as MMDetMaskIoUHead
from mmdet.models.task_modules.samplers import SamplingResult
from mmdet.utils import ConfigType, InstanceList
from torch import Tensor

from ..registry import MODELS
from .area_ratio import area_ratios
from .channels_last import cpu_channels_last
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

    On the CPU the comparisons run in NumPy, which is faster than torch's
    for these small arrays (docs/benchmarks.md).

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


#: the per-detection fields the MaskIoU head adds to ``pred_instances``
MASK_SCORE_FIELDS = ('mask_ious', 'mask_scores', 'maskness')
#: what the MaskIoU head reads of the predicted mask: ``'probability'``
#: (its sigmoid, as mmdet's head and the authors' code) or ``'logit'``
MASK_INPUTS = ('probability', 'logit')
#: the initial bias of the head's output layer: it starts predicting a
#: typical MaskIoU target instead of mmdet's 0, which raised its
#: correlation on every seed of the demo (docs/mask_scoring.md)
IOU_PRIOR = 0.75


def default_init_cfg(iou_prior: float) -> List[dict]:
    """mmdet's ``MaskIoUHead`` initialisation, with the output layer's bias
    at ``iou_prior``."""
    return [
        dict(type='Kaiming', override=dict(name='convs')),
        dict(type='Caffe2Xavier', override=dict(name='fcs')),
        dict(type='Normal', std=0.01, bias=iou_prior,
             override=dict(name='fc_mask_iou'))
    ]


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


def maskness(mask_preds: Tensor, prob_thr: float) -> Tensor:
    """SOLOv2's maskness: the mean probability of each mask over its pixels
    above ``prob_thr`` (0 for a mask without such a pixel).

    Args:
        mask_preds (Tensor): ``(n, h, w)`` mask logits.
        prob_thr (float): Foreground probability threshold.

    Returns:
        Tensor: ``(n, )`` float32 in ``[0, 1]``.
    """
    probs = mask_preds.detach().float().sigmoid().flatten(1)
    foreground = (probs > prob_thr).float()
    return (probs * foreground).sum(1) / foreground.sum(1).clamp(min=1)


@MODELS.register_module()
class MaskIoUHead(MMDetMaskIoUHead):
    """Regresses the IoU between a predicted mask and its ground truth.

    The architecture and the ``state_dict`` are mmdet 3.3.0's ``MaskIoUHead``
    (its model-zoo checkpoints load as they are): the RoI feature
    (``in_channels x roi_feat_size^2``) concatenated with the 2x2 max-pooled
    mask of the target class, ``num_convs`` 3x3 convs (the last with stride
    2), ``num_fcs`` FCs and one IoU per class. What differs:

    - ``mask_input`` says whether the head reads the mask's probability (the
      default, what mmdet's head and the authors' code do: mmdet's
      ``forward`` takes the sigmoid of the logits it is given) or its raw
      logits;
    - the predicted mask is binarised at the probability
      ``rcnn_train_cfg.mask_thr_binary`` for the targets, not at that value
      of the logits;
    - the whole-instance area comes from summed-area tables
      (:mod:`.area_ratio`), with no loop over proposals;
    - :meth:`predict_by_feat` adds ``mask_ious``, ``mask_scores`` and
      ``maskness`` and leaves the classification ``scores`` alone.

    Loss. The default, ``MSELoss(loss_weight=0.5)`` averaged over the RoIs
    whose target exceeds ``loss_target_thr=0.0``, is mmdet's convention: the
    paper's l2 loss written as ``1/2 * (p - t)^2``. RoIs whose predicted
    mask misses the ground truth entirely (target 0) are left out, as in
    mmdet; ``loss_target_thr=None`` trains on every positive RoI.

    Args:
        roi_feat_size (int): Side of the RoI feature. Defaults to 14.
        mask_input (str): ``'probability'`` or ``'logit'``.
            Defaults to ``'probability'``.
        detach_mask (bool): Stop the MaskIoU loss's gradient into the mask
            head (the authors' code does not). Defaults to False.
        loss_target_thr (float, optional): Only RoIs whose target is above
            it enter the loss; ``None`` keeps them all. Defaults to 0.0.
        iou_prior (float): Initial bias of the output layer, where
            ``init_cfg`` is not given (mmdet's is 0). Defaults to
            :data:`IOU_PRIOR` (0.75).
        init_cfg (dict or list[dict], optional): Initialisation. Defaults to
            mmdet's, with ``iou_prior`` as the output bias.
        **kwargs: The other arguments of mmdet's ``MaskIoUHead``
            (``num_convs=4``, ``num_fcs=2``, ``in_channels=256``,
            ``conv_out_channels=256``, ``fc_out_channels=1024``,
            ``num_classes=80``, ``loss_iou``).

    Raises:
        TypeError: a config key that is none of the above (the message lists
            the valid keys).
        ValueError: ``mask_input`` is not one of :data:`MASK_INPUTS`.
    """

    def __init__(self,
                 roi_feat_size: int = 14,
                 mask_input: str = 'probability',
                 detach_mask: bool = False,
                 loss_target_thr: Optional[float] = 0.0,
                 iou_prior: float = IOU_PRIOR,
                 **kwargs) -> None:
        check_keys(type(self), kwargs)
        kwargs.setdefault('init_cfg', default_init_cfg(iou_prior))
        if mask_input not in MASK_INPUTS:
            raise ValueError(
                f'mask_iou_head.mask_input={mask_input!r}; expected one of '
                f'{", ".join(map(repr, MASK_INPUTS))}')
        super().__init__(roi_feat_size=roi_feat_size, **kwargs)
        #: side of the RoI feature it takes (mmdet's head does not keep it)
        self.roi_feat_size = roi_feat_size
        self.mask_input = mask_input
        self.detach_mask = detach_mask
        self.loss_target_thr = loss_target_thr

    def forward(self, mask_feat: Tensor, mask_preds: Tensor) -> Tensor:
        """Predicted IoU of each RoI's mask, for every class.

        Args:
            mask_feat (Tensor): ``(n, in_channels, s, s)`` RoI features.
            mask_preds (Tensor): ``(n, 2s, 2s)`` mask logits of one class.

        Returns:
            Tensor: ``(n, num_classes)``.
        """
        if self.detach_mask:
            mask_preds = mask_preds.detach()
        if self.mask_input == 'probability':
            mask_preds = mask_preds.sigmoid()
        x = torch.cat((mask_feat, self.max_pool(mask_preds.unsqueeze(1))), 1)
        # oneDNN runs these convolutions on 14x14 maps of 257 channels
        # faster channels-last
        x = cpu_channels_last(x)
        for conv in self.convs:
            x = self.relu(conv(x))
        x = x.flatten(1)
        for fc in self.fcs:
            x = self.relu(fc(x))
        return self.fc_mask_iou(x)

    def loss(self, mask_results: dict, sampling_results: List[SamplingResult],
             batch_gt_instances: InstanceList,
             rcnn_train_cfg: ConfigType) -> dict:
        """The MaskIoU loss of the positive RoIs, from the mask branch's
        results.

        Args:
            mask_results (dict): ``mask_feats`` ``(num_pos, C, s, s)``,
                ``mask_preds`` ``(num_pos, num_classes or 1, 2s, 2s)`` and
                ``mask_targets`` ``(num_pos, 2s, 2s)`` of the positive RoIs.
            sampling_results (list[SamplingResult]): Per-image samples.
            batch_gt_instances (list[InstanceData]): Per-image ground truth
                with ``masks``.
            rcnn_train_cfg (ConfigDict): R-CNN ``train_cfg``.

        Returns:
            dict: ``loss_mask_iou``.
        """
        labels = torch.cat([res.pos_gt_labels for res in sampling_results])
        mask_preds = select_class(mask_results['mask_preds'], labels)
        mask_iou_pred = select_class(
            self(mask_results['mask_feats'], mask_preds), labels)
        return dict(loss_mask_iou=self.loss_and_target(
            mask_iou_pred, mask_preds, mask_results['mask_targets'],
            sampling_results, batch_gt_instances,
            rcnn_train_cfg)['loss_mask_iou'])

    def predict(self, mask_results: dict, results_list: InstanceList,
                rcnn_test_cfg: ConfigType,
                rescore_boxes: bool = False) -> InstanceList:
        """Score the masks of the detections of a batch.

        Args:
            mask_results (dict): ``mask_feats`` and ``mask_preds`` (logits,
                before pasting) of every detection of the batch, in the order
                of ``results_list``.
            results_list (list[InstanceData]): Per-image detections with
                ``scores`` and ``labels``.
            rcnn_test_cfg (ConfigDict): R-CNN ``test_cfg``; maskness counts
                the pixels above its ``mask_thr_binary``.
            rescore_boxes (bool): As :meth:`predict_by_feat`.

        Returns:
            list[InstanceData]: As :meth:`predict_by_feat`.
        """
        labels = torch.cat([res.labels for res in results_list])
        mask_preds = select_class(mask_results['mask_preds'], labels)
        counts = [len(res) for res in results_list]
        return self.predict_by_feat(
            self(mask_results['mask_feats'], mask_preds).split(counts),
            results_list,
            maskness(mask_preds, rcnn_test_cfg.mask_thr_binary).split(counts),
            rescore_boxes=rescore_boxes)

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
                        maskness: Optional[Sequence[Tensor]] = None,
                        rescore_boxes: bool = False) -> InstanceList:
        """Attach the predicted MaskIoU and the mask score to detections.

        Args:
            mask_iou_preds (Sequence[Tensor]): Per image,
                ``(num_det, num_classes)`` predicted IoUs.
            results_list (list[InstanceData]): Per-image detections with
                ``scores`` and ``labels``.
            maskness (Sequence[Tensor], optional): Per image, ``(num_det, )``
                maskness (:func:`maskness`) to attach. Defaults to None.
            rescore_boxes (bool): Also overwrite ``scores`` with the mask
                score, as mmdet 3.x does (for comparisons only).
                Defaults to False.

        Returns:
            list[InstanceData]: The same detections, with ``mask_ious``
            (predicted MaskIoU of the predicted class, clamped to [0, 1]),
            ``mask_scores`` (``scores * mask_ious``) and, when given,
            ``maskness``, each ``(num_det, )``.
        """
        for k, (results, iou_pred) in enumerate(
                zip(results_list, mask_iou_preds)):
            ious = select_class(iou_pred, results.labels).float().clamp(0, 1)
            results.mask_ious = ious
            results.mask_scores = results.scores * ious
            if maskness is not None:
                results.maskness = maskness[k]
            if rescore_boxes:
                results.scores = results.mask_scores
        return results_list
