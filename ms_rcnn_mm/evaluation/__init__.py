"""Metrics registered in the ``ms_rcnn_mm`` scope."""
from .mask_iou_quality import (ECE_BINS, MaskIoUQualityMetric,
                               calibration_bins, correlations,
                               expected_calibration_error)

__all__ = [
    'ECE_BINS', 'MaskIoUQualityMetric', 'calibration_bins', 'correlations',
    'expected_calibration_error'
]
