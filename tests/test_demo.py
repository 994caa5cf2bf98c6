"""The synthetic dataset, the mask-scoring metric and a shortened
``make demo``."""
import json

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from pycocotools.coco import COCO

from ms_rcnn_mm import demo
from ms_rcnn_mm.datasets import CLASSES, generate
from ms_rcnn_mm.datasets.synthetic import digest
from ms_rcnn_mm.evaluation import MaskIoUQualityMetric


def test_generator_is_deterministic_and_valid_coco(tmp_path):
    a = generate(tmp_path / 'a', num_train=6, num_val=4, size=96, seed=3)
    b = generate(tmp_path / 'b', num_train=6, num_val=4, size=96, seed=3)
    c = generate(tmp_path / 'c', num_train=6, num_val=4, size=96, seed=4)
    assert digest(a) == digest(b) != digest(c)
    coco = COCO(str(a / 'annotations' / 'train.json'))
    assert [cat['name'] for cat in coco.loadCats(coco.getCatIds())] == list(
        CLASSES)
    assert len(coco.imgs) == 6 and len(coco.anns) >= 12
    for ann in coco.anns.values():
        mask = coco.annToMask(ann)
        assert mask.sum() == ann['area'] > 0
        x, y, w, h = ann['bbox']
        ys, xs = np.nonzero(mask)
        assert (x, y, w, h) == (xs.min(), ys.min(), np.ptp(xs) + 1,
                                np.ptp(ys) + 1)
    # cached: a second call with the same settings rewrites nothing
    stamp = (a / 'train' / '00000.jpg').stat().st_mtime_ns
    generate(tmp_path / 'a', num_train=6, num_val=4, size=96, seed=3)
    assert (a / 'train' / '00000.jpg').stat().st_mtime_ns == stamp


def square(size, x0, y0, side):
    mask = np.zeros((size, size), np.uint8)
    mask[y0:y0 + side, x0:x0 + side] = 1
    return mask


def write_coco(path, size, gts):
    anns = []
    for k, (label, mask) in enumerate(gts):
        rle = mask_util.encode(np.asfortranarray(mask))
        rle['counts'] = rle['counts'].decode()
        anns.append(dict(id=k + 1, image_id=1, category_id=label,
                         segmentation=rle, area=float(mask.sum()),
                         bbox=[float(v) for v in mask_util.toBbox(rle)],
                         iscrowd=0))
    path.write_text(json.dumps(dict(
        images=[dict(id=1, file_name='x.jpg', width=size, height=size)],
        annotations=anns,
        categories=[dict(id=1, name='a'), dict(id=2, name='b')])))


def test_metric_against_a_hand_computed_case(tmp_path):
    """Two GT squares; three detections of known true IoU.

    det A: the first GT exactly (true IoU 1), cls 0.6, predicted IoU 0.9
    det B: half of the second GT (true IoU 0.5), cls 0.9, predicted IoU 0.4
    det C: a false positive (true IoU 0), cls 0.8, predicted IoU 0.1
    Ranked by cls alone, B (IoU 0.5) and C come first; by cls x MaskIoU,
    A does: segm AP must rise.
    """
    size = 64
    gt_a, gt_b = square(size, 4, 4, 20), square(size, 36, 36, 20)
    ann_file = tmp_path / 'gt.json'
    write_coco(ann_file, size, [(1, gt_a), (1, gt_b)])
    det_b = square(size, 36, 36, 20)
    det_b[:, 46:] = 0  # left half: IoU 0.5
    det_c = square(size, 40, 2, 14)
    masks = torch.from_numpy(np.stack([gt_a, det_b, det_c])).bool()
    boxes = torch.tensor([[4., 4, 24, 24], [36, 36, 46, 56], [40, 2, 54, 16]])
    cls = torch.tensor([0.6, 0.9, 0.8])
    pred_iou = torch.tensor([0.9, 0.4, 0.1])
    metric = MaskIoUQualityMetric(str(ann_file), keep_pairs=True)
    metric.process({}, [dict(img_id=1, pred_instances=dict(
        masks=masks, bboxes=boxes, labels=torch.zeros(3, dtype=torch.long),
        scores=cls, mask_ious=pred_iou, mask_scores=cls * pred_iou))])
    out = metric.compute_metrics(metric.results)
    np.testing.assert_allclose(metric.pairs['true'], [1.0, 0.5, 0.0],
                               atol=1e-6)
    assert metric.pairs['matched'].tolist() == [True, True, False]
    assert out['num_matched'] == 2 and out['num_detections'] == 3
    assert out['segm_mAP'] > out['segm_mAP_cls_score']
    assert out['segm_mAP_gain'] == pytest.approx(
        out['segm_mAP'] - out['segm_mAP_cls_score'])
    # all detections: pearson of (0.9, 0.4, 0.1) with (1, 0.5, 0)
    want = np.corrcoef([0.9, 0.4, 0.1], [1.0, 0.5, 0.0])[0, 1]
    assert out['pearson_all'] == pytest.approx(want, abs=1e-6)
    assert np.isnan(out['pearson'])  # 2 matched points: undefined


def test_shortened_demo_end_to_end(tmp_path):
    work_dir = tmp_path / 'demo'
    summary = demo.main([
        '--work-dir', str(work_dir), '--data-root', str(tmp_path / 'data'),
        '--iters', '6', '--num-train', '16', '--num-val', '8'
    ])
    written = json.loads((work_dir / 'summary.json').read_text())
    for key in ('bbox_mAP', 'segm_mAP', 'segm_mAP_cls_score',
                'segm_mAP_gain', 'maskiou_pearson', 'maskiou_spearman',
                'train_seconds', 'eval_seconds'):
        assert key in written, key
    assert written == pytest.approx(summary, nan_ok=True)
    assert 0 <= written['segm_mAP'] <= 1 and written['train_seconds'] > 0
    assert written['segm_mAP_gain'] == pytest.approx(
        written['segm_mAP'] - written['segm_mAP_cls_score'])
    assert (work_dir / 'summary.md').read_text().startswith('| metric |')
    assert (work_dir / 'maskiou_scatter.png').stat().st_size > 1000
    assert (work_dir / 'iter_6.pth').is_file()
