"""Models of Mask Scoring R-CNN, registered in the ``ms_rcnn_mm`` scope."""
from .area_ratio import gt_area_ratios
from .cascade_mask_scoring_roi_head import (CascadeMaskScoringRoIHead,
                                            HTCMaskScoringRoIHead)
from .channels_last import ChannelsLastFCNMaskHead
from .mask_iou_head import MaskIoUHead
from .mask_scoring_rcnn import MaskScoringRCNN
from .mask_scoring_roi_head import MaskScoringRoIHead

__all__ = [
    'CascadeMaskScoringRoIHead', 'ChannelsLastFCNMaskHead',
    'HTCMaskScoringRoIHead', 'MaskIoUHead', 'MaskScoringRCNN',
    'MaskScoringRoIHead', 'gt_area_ratios'
]
