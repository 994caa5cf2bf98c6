"""Registries of the ``ms_rcnn_mm`` scope.

They are children of MMDetection's registries, so a config built under
``default_scope='mmdet'`` reaches this package's classes by their prefixed
names (``type='ms_rcnn_mm.MaskIoUHead'``), and mmdet's built-in classes of the
same short names (``MaskIoUHead``, ``MaskScoringRoIHead``, ``MaskScoringRCNN``)
stay untouched. Nested defaults inside this package must therefore use the
prefixed names: an unprefixed nested type resolves in mmdet's registry.

The scope is also a package whose configs mmengine can find by model name:
``MODULE2PACKAGE`` gets ``ms_rcnn_mm``, so that
``DetInferencer(model=NAME, scope='ms_rcnn_mm')`` (mmdet's or
:class:`ms_rcnn_mm.apis.DetInferencer`) reads ``NAME`` from this package's
``model-index.yml``.
"""
from mmdet.registry import DATASETS as MMDET_DATASETS
from mmdet.registry import HOOKS as MMDET_HOOKS
from mmdet.registry import METRICS as MMDET_METRICS
from mmdet.registry import MODELS as MMDET_MODELS
from mmdet.registry import TRANSFORMS as MMDET_TRANSFORMS
from mmengine.config.utils import MODULE2PACKAGE
from mmengine.registry import Registry

SCOPE = 'ms_rcnn_mm'


def child(name: str, parent: Registry, module: str) -> Registry:
    """A registry of this scope under mmdet's ``parent``, whose classes live
    in ``ms_rcnn_mm.<module>``."""
    return Registry(name, parent=parent, scope=SCOPE,
                    locations=[f'{SCOPE}.{module}'])


MODELS = child('model', MMDET_MODELS, 'models')
METRICS = child('metric', MMDET_METRICS, 'evaluation')
DATASETS = child('dataset', MMDET_DATASETS, 'datasets')
TRANSFORMS = child('transform', MMDET_TRANSFORMS, 'datasets')
HOOKS = child('hook', MMDET_HOOKS, 'engine')

#: the pip package of the scope, for mmengine's model-name lookup
MODULE2PACKAGE.setdefault(SCOPE, SCOPE)


def scoped(name: str) -> str:
    """Return the config ``type`` that reaches ``name`` in this package."""
    return f'{SCOPE}.{name}'
