"""Mask Scoring R-CNN (Huang et al., CVPR 2019) for MMDetection 3.x.

``import ms_rcnn_mm`` applies the stack fixes of :mod:`ms_rcnn_mm.compat`,
makes checkpoint writes atomic (:mod:`ms_rcnn_mm.engine.checkpoint`)
and registers every module of the package in the ``ms_rcnn_mm`` scope.
"""
from . import compat
from .version import __version__

compat.apply()

from . import datasets, engine, evaluation, models  # noqa: E402,F401

engine.install_atomic_save()

__all__ = [
    '__version__', 'compat', 'datasets', 'engine', 'evaluation', 'models'
]
