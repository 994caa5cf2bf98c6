"""The Mask Scoring R-CNN detector."""
from mmdet.models.detectors import TwoStageDetector

from ..registry import MODELS


@MODELS.register_module()
class MaskScoringRCNN(TwoStageDetector):
    """Mask Scoring R-CNN (arXiv 1903.00241): a two-stage detector whose RoI
    head is :class:`~ms_rcnn_mm.models.MaskScoringRoIHead`.

    Takes the arguments of mmdet's ``TwoStageDetector``.
    """
