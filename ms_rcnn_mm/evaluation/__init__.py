"""Metrics registered in the ``ms_rcnn_mm`` scope."""
from .mask_iou_quality import MaskIoUQualityMetric, correlations

__all__ = ['MaskIoUQualityMetric', 'correlations']
