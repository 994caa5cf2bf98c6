"""The package registers its classes beside mmdet's, and mmcv's compiled ops
run on the CPU."""
import numpy as np
import pytest
import torch
from mmcv.ops import RoIAlign, batched_nms, nms
from mmdet.registry import MODELS as MMDET_MODELS

import ms_rcnn_mm
from ms_rcnn_mm.models import MaskIoUHead, MaskScoringRCNN, MaskScoringRoIHead
from ms_rcnn_mm.registry import MODELS, scoped

CLASSES = {
    'MaskIoUHead': MaskIoUHead,
    'MaskScoringRoIHead': MaskScoringRoIHead,
    'MaskScoringRCNN': MaskScoringRCNN,
}


def test_version_and_registry_scope():
    assert ms_rcnn_mm.__version__.count('.') == 2
    assert MODELS.scope == 'ms_rcnn_mm'
    assert MODELS.parent is MMDET_MODELS


@pytest.mark.parametrize('name', sorted(CLASSES))
def test_classes_are_registered_beside_mmdets(name):
    ours = MMDET_MODELS.get(scoped(name))
    theirs = MMDET_MODELS.get(name)
    assert ours is CLASSES[name]
    assert theirs is not ours
    assert theirs.__module__.startswith('mmdet.')
    assert MODELS.get(name) is ours


def test_prefixed_type_builds_our_head_from_mmdets_registry():
    head = MMDET_MODELS.build(dict(type='ms_rcnn_mm.MaskIoUHead',
                                   num_classes=5))
    assert type(head) is MaskIoUHead and head.fc_mask_iou.out_features == 5


def brute_force_roi_align(feat, box, out, spatial_scale=1.0):
    """RoIAlign with aligned=True and sampling_ratio=1 at bin centres."""
    x1, y1, x2, y2 = (v * spatial_scale - 0.5 for v in box)
    bin_w, bin_h = (x2 - x1) / out, (y2 - y1) / out
    height, width = feat.shape[1:]
    result = np.zeros((feat.shape[0], out, out))
    for i in range(out):
        for j in range(out):
            y, x = y1 + (i + 0.5) * bin_h, x1 + (j + 0.5) * bin_w
            y, x = min(max(y, 0), height - 1), min(max(x, 0), width - 1)
            y0, x0 = int(np.floor(y)), int(np.floor(x))
            y1_, x1_ = min(y0 + 1, height - 1), min(x0 + 1, width - 1)
            ly, lx = y - y0, x - x0
            result[:, i, j] = (feat[:, y0, x0] * (1 - ly) * (1 - lx) +
                               feat[:, y0, x1_] * (1 - ly) * lx +
                               feat[:, y1_, x0] * ly * (1 - lx) +
                               feat[:, y1_, x1_] * ly * lx)
    return result


def test_compiled_roi_align_runs_on_cpu_and_matches_bilinear_sampling():
    rng = np.random.default_rng(0)
    feat = rng.normal(size=(1, 3, 20, 24)).astype(np.float32)
    boxes = [[2.3, 3.1, 15.7, 12.2], [0.0, 0.0, 24.0, 20.0]]
    rois = torch.tensor([[0.0] + b for b in boxes])
    op = RoIAlign(output_size=5, spatial_scale=1.0, sampling_ratio=1,
                  aligned=True)
    out = op(torch.from_numpy(feat), rois)
    assert out.shape == (2, 3, 5, 5)
    for k, box in enumerate(boxes):
        want = brute_force_roi_align(feat[0], box, 5)
        np.testing.assert_allclose(out[k].numpy(), want, atol=1e-5)


def test_compiled_nms_runs_on_cpu():
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30],
                          [0, 0, 10, 9.]])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.95])
    dets, keep = nms(boxes, scores, iou_threshold=0.5)
    # box 3 overlaps box 0 (IoU 0.9) and box 1 (IoU 72/118 = 0.61)
    assert keep.tolist() == [3, 2]
    torch.testing.assert_close(dets[:, 4], torch.tensor([0.95, 0.7]))
    # per class: 0 and 2 do not overlap; 3 still suppresses 1
    _, keep = batched_nms(boxes, scores, torch.tensor([0, 1, 0, 1]),
                          dict(type='nms', iou_threshold=0.5))
    assert sorted(keep.tolist()) == [0, 2, 3]
