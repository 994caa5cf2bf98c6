"""Inference APIs: mmdet's ``DetInferencer`` with the mask scores."""
from .det_inferencer import DetInferencer, scored_by_mask

__all__ = ['DetInferencer', 'scored_by_mask']
