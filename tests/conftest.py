"""Every test builds under mmdet's default scope, whatever ran before it
(an mmengine Runner makes its own scope current). Tests marked ``cuda`` are
skipped, with a reason, where torch sees no CUDA device
(``scripts/gpu_check.sh`` runs them on a GPU)."""
import pytest
import torch
from mmengine.registry import DefaultScope

NO_CUDA = pytest.mark.skip(
    reason='needs a CUDA device; none here (scripts/gpu_check.sh runs it)')


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    for item in items:
        if item.get_closest_marker('cuda') is not None:
            item.add_marker(NO_CUDA)


@pytest.fixture(autouse=True)
def mmdet_scope():
    with DefaultScope.overwrite_default_scope('mmdet'):
        yield
