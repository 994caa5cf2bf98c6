"""Datasets shipped as code: the synthetic shapes of ``make demo``."""
from .synthetic import CLASSES, generate

__all__ = ['CLASSES', 'generate']
