"""Export of Mask Scoring R-CNN to ONNX, and its check against PyTorch."""
from .onnx_model import OUTPUT_NAMES, ONNXMaskScoringRCNN, check_exportable

__all__ = ['ONNXMaskScoringRCNN', 'OUTPUT_NAMES', 'check_exportable']
