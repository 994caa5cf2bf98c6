"""The Mask Scoring R-CNN detector."""
import numpy as np
import torch
from mmdet.models.detectors import TwoStageDetector
from mmdet.structures import SampleList
from mmdet.structures.bbox import get_box_tensor
from mmdet.structures.mask import BitmapMasks, PolygonMasks
from mmengine.structures import InstanceData
from torch import Tensor

from ..registry import MODELS
from .area_ratio import Masks

#: ground-truth boxes this thin (pixels) or thinner are not instances
MIN_GT_SIDE = 1e-2


def has_pixels(masks: Masks) -> Tensor:
    """Whether each mask (BitmapMasks, PolygonMasks or a tensor) has a pixel.

    Bitmaps are read as a whole with torch's reduction (multi-threaded, no
    int64 accumulation as ``BitmapMasks.areas`` does): this runs on every
    training batch.
    """
    if isinstance(masks, PolygonMasks):
        return torch.from_numpy(np.asarray(masks.areas) > 0)
    if isinstance(masks, BitmapMasks):
        masks = torch.from_numpy(np.ascontiguousarray(masks.masks))
    return masks.flatten(1).amax(1) > 0 if masks.numel() else torch.zeros(
        len(masks), dtype=torch.bool)


def visible_instances(gt_instances: InstanceData) -> InstanceData:
    """The instances that are still in the image after augmentation.

    Geometric augmentations (RandAugment's translations and shears,
    ``RandomCrop`` with ``recompute_bbox=True``, large-scale jitter,
    ``CopyPaste`` occlusions) can leave an instance with a box of zero width
    or height, clipped to the border, and no mask pixel. mmdet's
    MaskIoU head crashes on such boxes (mmdet issue 11527: ``IndexError`` in
    ``_get_area_ratio``) and box regression turns them into ``log(0)``;
    they are dropped here.
    """
    boxes = get_box_tensor(gt_instances.bboxes)
    keep = ((boxes[:, 2:] - boxes[:, :2]) > MIN_GT_SIDE).all(1)
    if 'masks' in gt_instances:
        keep &= has_pixels(gt_instances.masks).to(keep.device)
    return gt_instances if bool(keep.all()) else gt_instances[keep]


@MODELS.register_module()
class MaskScoringRCNN(TwoStageDetector):
    """Mask Scoring R-CNN (arXiv 1903.00241): a two-stage detector whose RoI
    head is :class:`~ms_rcnn_mm.models.MaskScoringRoIHead`.

    Takes the arguments of mmdet's ``TwoStageDetector``. Training drops the
    ground-truth instances that augmentation left without area
    (:func:`visible_instances`).
    """

    def loss(self, batch_inputs: Tensor,
             batch_data_samples: SampleList) -> dict:
        """The losses of ``TwoStageDetector`` on the visible instances."""
        for sample in batch_data_samples:
            sample.gt_instances = visible_instances(sample.gt_instances)
        return super().loss(batch_inputs, batch_data_samples)
