"""Every test builds under mmdet's default scope, whatever ran before it
(an mmengine Runner makes its own scope current)."""
import pytest
from mmengine.registry import DefaultScope


@pytest.fixture(autouse=True)
def mmdet_scope():
    with DefaultScope.overwrite_default_scope('mmdet'):
        yield
