"""What every RoI head with a MaskIoU branch shares: building the MaskIoU
head, checking it against the heads and RoI extractor it reads, and the
empty fields of an image without detections."""
from mmengine.structures import InstanceData
from torch import nn
from torch.nn.modules.utils import _pair

from ..registry import MODELS
from .mask_iou_head import MASK_SCORE_FIELDS, MaskIoUHead


def build_mask_iou_head(cfg: dict) -> MaskIoUHead:
    """Build ``cfg``, which must give this package's :class:`MaskIoUHead`.

    Raises:
        TypeError: ``cfg`` built another class (mmdet's ``MaskIoUHead``
            under the unprefixed name, most often); the message says what to
            write.
    """
    head = MODELS.build(cfg)
    if not isinstance(head, MaskIoUHead):
        raise TypeError(
            'mask_iou_head must be ms_rcnn_mm.MaskIoUHead, got '
            f'{type(head).__module__}.{type(head).__name__} from type='
            f"{cfg['type']!r}; write type='ms_rcnn_mm.MaskIoUHead'")
    return head


def check_mask_iou_head(mask_iou_head: MaskIoUHead, bbox_head: nn.Module,
                        mask_head: nn.Module,
                        mask_roi_extractor: nn.Module) -> None:
    """Reject a MaskIoU head that disagrees with the heads around it, before
    a forward would.

    Args:
        mask_iou_head (MaskIoUHead): The MaskIoU head.
        bbox_head, mask_head (nn.Module): The (last stage's) box and mask
            heads.
        mask_roi_extractor (nn.Module): The RoI extractor of the features
            the MaskIoU head reads.

    Raises:
        ValueError: ``num_classes`` differs between the three heads, or
            ``mask_iou_head.roi_feat_size`` is not the extractor's output
            size.
    """
    classes = dict(bbox_head=bbox_head.num_classes,
                   mask_head=mask_head.num_classes,
                   mask_iou_head=mask_iou_head.num_classes)
    if len(set(classes.values())) > 1:
        raise ValueError(
            'num_classes differs between the heads: ' + ', '.join(
                f'{name}.num_classes={value}'
                for name, value in classes.items()) +
            '; set the same value in all three')
    out_size = tuple(_pair(mask_roi_extractor.roi_layers[0].output_size))
    if tuple(_pair(mask_iou_head.roi_feat_size)) != out_size:
        raise ValueError(
            f'mask_iou_head.roi_feat_size={mask_iou_head.roi_feat_size} does '
            'not match the output of the mask RoI extractor, '
            f'mask_roi_extractor.roi_layer.output_size={out_size}')


def with_empty_scores(results: InstanceData) -> InstanceData:
    """``results`` of an image without detections, with the fields of
    :meth:`MaskIoUHead.predict_by_feat` empty too."""
    for key in MASK_SCORE_FIELDS:
        results[key] = results.scores.new_zeros((0, ))
    return results
