"""Datasets: the synthetic shapes of ``make demo`` and checked COCO data."""
from .checked import (AnnotationFileError, AnnotationWarning,
                      CheckedCocoDataset, CheckedLoadImageFromFile,
                      ImageFileError)
from .synthetic import CLASSES, generate

__all__ = [
    'AnnotationFileError', 'AnnotationWarning', 'CLASSES',
    'CheckedCocoDataset', 'CheckedLoadImageFromFile', 'ImageFileError',
    'generate'
]
