"""Registries of the ``ms_rcnn_mm`` scope.

They are children of MMDetection's registries, so a config built under
``default_scope='mmdet'`` reaches this package's classes by their prefixed
names (``type='ms_rcnn_mm.MaskIoUHead'``), and mmdet's built-in classes of the
same short names (``MaskIoUHead``, ``MaskScoringRoIHead``, ``MaskScoringRCNN``)
stay untouched. Nested defaults inside this package must therefore use the
prefixed names: an unprefixed nested type resolves in mmdet's registry.
"""
from mmdet.registry import METRICS as MMDET_METRICS
from mmdet.registry import MODELS as MMDET_MODELS
from mmengine.registry import Registry

SCOPE = 'ms_rcnn_mm'

MODELS = Registry(
    'model', parent=MMDET_MODELS, scope=SCOPE, locations=['ms_rcnn_mm.models'])
METRICS = Registry(
    'metric',
    parent=MMDET_METRICS,
    scope=SCOPE,
    locations=['ms_rcnn_mm.evaluation'])


def scoped(name: str) -> str:
    """Return the config ``type`` that reaches ``name`` in this package."""
    return f'{SCOPE}.{name}'
