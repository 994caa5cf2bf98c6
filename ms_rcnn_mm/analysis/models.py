"""The detectors the analysis tools compare, built from one config.

- ``ms_rcnn_mm``: the config as it is (this package's MS R-CNN, or its
  Cascade Mask R-CNN or HTC with mask scoring);
- ``mask_rcnn``: the same config with mmdet's own detector and RoI head
  (``MaskRCNN`` / ``StandardRoIHead``, ``CascadeRCNN`` /
  ``CascadeRoIHead``, ``HybridTaskCascade`` / ``HybridTaskCascadeRoIHead``)
  and no MaskIoU head: the baseline with the same backbone, neck, heads,
  input and batch;
- ``mmdet_ms_rcnn``: the same config with MMDetection 3.3.0's built-in
  ``MaskScoringRCNN`` / ``MaskScoringRoIHead`` / ``MaskIoUHead`` (standard
  heads only: mmdet has no cascade with mask scoring).

All three get the weights of the first (mmdet's MS R-CNN has the same
``state_dict`` keys; Mask R-CNN has all but the MaskIoU head's), so they
compute on the same numbers.
"""
import copy
import logging
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
from mmdet.registry import MODELS
from mmdet.structures import DetDataSample
from mmdet.structures.mask import BitmapMasks
from mmengine.config import Config, ConfigDict
from mmengine.logging import MMLogger
from mmengine.structures import InstanceData
from torch import nn

from ..datasets.synthetic import make_image

OURS, BASELINE, MMDET = 'ms_rcnn_mm', 'mask_rcnn', 'mmdet_ms_rcnn'
VARIANTS = (OURS, BASELINE, MMDET)
#: the paper's and mmdet's number of detections scored at test time
NUM_DETECTIONS = 100
#: arguments of this package's heads that mmdet's heads do not take
OUR_ONLY_ARGS = {'roi_head': ('rescore_boxes', 'mask_iou_stages',
                              'mask_iou_input'),
                 'mask_iou_head': ('loss_target_thr', 'mask_input',
                                   'detach_mask', 'iou_prior')}
#: this package's RoI head type -> mmdet's detector and RoI head without
#: mask scoring
BASELINE_TYPES = {
    'ms_rcnn_mm.MaskScoringRoIHead': ('MaskRCNN', 'StandardRoIHead'),
    'ms_rcnn_mm.CascadeMaskScoringRoIHead': ('CascadeRCNN',
                                             'CascadeRoIHead'),
    'ms_rcnn_mm.HTCMaskScoringRoIHead': ('HybridTaskCascade',
                                         'HybridTaskCascadeRoIHead'),
}
MASK_IOU_PREFIX = 'roi_head.mask_iou_head.'


def load_config(path: str, cfg_options: Optional[dict] = None) -> Config:
    """Load an MS R-CNN config with no pretrained download.

    Raises:
        ValueError: The config's model has no ``roi_head.mask_iou_head``.
    """
    cfg = Config.fromfile(path)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    roi_head = cfg.model.get('roi_head', {})
    if 'mask_iou_head' not in roi_head:
        raise ValueError(
            f'{path}: model.roi_head has no mask_iou_head (type '
            f"{roi_head.get('type')!r}); give a Mask Scoring R-CNN config")
    cfg.model.backbone.init_cfg = None  # random weights, no download
    return cfg


def force_detections(model_cfg: ConfigDict,
                     num: int = NUM_DETECTIONS) -> ConfigDict:
    """Keep exactly ``num`` detections per image (score threshold 0), so
    that the mask and MaskIoU heads see ``num`` RoIs whatever the weights."""
    model_cfg = copy.deepcopy(model_cfg)
    model_cfg.test_cfg.rcnn.update(score_thr=0.0, max_per_img=num)
    return model_cfg


def variants_of(model_cfg: ConfigDict) -> Tuple[str, ...]:
    """The :data:`VARIANTS` that exist for ``model_cfg``: all three for the
    standard head, ours and the baseline for the cascades."""
    if model_cfg.roi_head.type == 'ms_rcnn_mm.MaskScoringRoIHead':
        return VARIANTS
    return (OURS, BASELINE)


def variant_cfg(model_cfg: ConfigDict, variant: str) -> ConfigDict:
    """The model config of ``variant`` (one of :func:`variants_of`)."""
    if variant not in variants_of(model_cfg):
        raise ValueError(f'unknown variant {variant!r} of a '
                         f'{model_cfg.roi_head.type}; one of '
                         f'{variants_of(model_cfg)}')
    model_cfg = copy.deepcopy(model_cfg)
    if variant == OURS:
        return model_cfg
    roi_head = model_cfg.roi_head
    for key in OUR_ONLY_ARGS['roi_head']:
        roi_head.pop(key, None)
    if variant == BASELINE:
        model_cfg.type, roi_head.type = BASELINE_TYPES[roi_head.type]
        roi_head.pop('mask_iou_head')
        return model_cfg
    model_cfg.type = 'MaskScoringRCNN'
    roi_head.type = 'MaskScoringRoIHead'
    roi_head.mask_iou_head.type = 'MaskIoUHead'
    for key in OUR_ONLY_ARGS['mask_iou_head']:
        roi_head.mask_iou_head.pop(key, None)
    return model_cfg


def share_weights(source: nn.Module, target: nn.Module) -> None:
    """Load ``source``'s weights into ``target``.

    Raises:
        RuntimeError: a key is missing from ``target`` or left over, other
            than the MaskIoU head's when ``target`` has none.
    """
    result = target.load_state_dict(source.state_dict(), strict=False)
    extra = [k for k in result.unexpected_keys
             if not k.startswith(MASK_IOU_PREFIX)]
    if result.missing_keys or extra:
        raise RuntimeError(
            f'{type(target).__name__} does not take the weights of '
            f'{type(source).__name__}: missing {result.missing_keys[:5]}, '
            f'unexpected {extra[:5]}')


def build_variants(model_cfg: ConfigDict,
                   variants: Optional[Tuple[str, ...]] = None,
                   seed: int = 0) -> Dict[str, nn.Module]:
    """Build ``variants`` of ``model_cfg`` (by default
    :func:`variants_of` it), all with the weights of ours."""
    variants = variants or variants_of(model_cfg)
    torch.manual_seed(seed)
    ours = MODELS.build(variant_cfg(model_cfg, OURS))
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.WARNING)  # one line per initialised tensor
    try:
        ours.init_weights()
    finally:
        logger.setLevel(level)
    models = {}
    for variant in variants:
        if variant == OURS:
            models[variant] = ours
            continue
        models[variant] = MODELS.build(variant_cfg(model_cfg, variant))
        share_weights(ours, models[variant])
    return models


def _instances(masks: List[np.ndarray], labels: List[int], height: int,
               width: int) -> InstanceData:
    boxes = []
    for mask in masks:
        ys, xs = np.nonzero(mask)
        boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    return InstanceData(
        bboxes=torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        labels=torch.tensor(labels, dtype=torch.long),
        masks=BitmapMasks(
            np.stack(masks) if masks else np.zeros((0, height, width),
                                                   np.uint8), height, width))


def synthetic_batch(num_images: int, height: int, width: int,
                    max_instances: int = 8, seed: int = 0) -> dict:
    """A batch for ``model.data_preprocessor``: images of ``height x width``
    with ground-truth instances (the shapes of ``make demo``'s dataset,
    drawn on a square canvas and cropped).

    Returns:
        dict: ``inputs`` (list of uint8 ``(3, H, W)`` tensors) and
        ``data_samples`` (``DetDataSample`` with ``gt_instances``).
    """
    rng = np.random.default_rng(seed)
    inputs, samples = [], []
    for index in range(num_images):
        img, instances = make_image(rng, max(height, width), max_instances)
        kept = [(label, mask[:height, :width]) for label, mask in instances
                if mask[:height, :width].any()]
        gt = _instances([m for _, m in kept], [lab for lab, _ in kept],
                        height, width)
        inputs.append(torch.from_numpy(
            np.ascontiguousarray(img[:height, :width])).permute(2, 0, 1))
        sample = DetDataSample(metainfo=dict(
            img_id=index, img_shape=(height, width),
            ori_shape=(height, width), scale_factor=(1.0, 1.0)))
        sample.gt_instances = gt
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)
