"""MaskIoUQualityMetric against pycocotools and mmdet's CocoMetric, and its
correlations and calibration error against brute-force references."""
import json

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from mmdet.evaluation import CocoMetric
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ms_rcnn_mm.evaluation import (MaskIoUQualityMetric, calibration_bins,
                                   expected_calibration_error)
from ms_rcnn_mm.evaluation.boundary import DILATION_RATIO, boundary_match_ious

SIZE = 64
#: the file's categories, not sorted by id; the model knows two of them
CATEGORIES = [dict(id=7, name='c'), dict(id=1, name='a'), dict(id=2, name='b')]
CLASSES = ('a', 'c')
#: label k's category: mmdet's CocoDataset numbers the classes' categories
#: in the file's order (here 0 -> 7 'c', 1 -> 1 'a'), neither by sorted id
#: nor in the order of CLASSES
LABEL_CATEGORIES = [7, 1]


def box_mask(x0, y0, x1, y1):
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[y0:y1, x0:x1] = 1
    return mask


def write_split(path, rng, num_images=4):
    """Images of 2-4 random boxes of the three categories, one crowd
    region; the last image gets no detection."""
    images, anns = [], []
    for image_id in range(1, num_images + 1):
        images.append(dict(id=image_id, file_name=f'{image_id}.jpg',
                           width=SIZE, height=SIZE))
        for _ in range(int(rng.integers(2, 5))):
            x0, y0 = rng.integers(0, SIZE - 20, 2)
            w, h = rng.integers(8, 20, 2)
            rle = mask_util.encode(np.asfortranarray(
                box_mask(x0, y0, x0 + w, y0 + h)))
            rle['counts'] = rle['counts'].decode()
            anns.append(dict(
                id=len(anns) + 1, image_id=image_id,
                category_id=int(rng.choice([1, 2, 7])), segmentation=rle,
                area=float(w * h), bbox=[float(x0), float(y0), float(w),
                                         float(h)], iscrowd=0))
    anns[0]['iscrowd'] = 1
    path.write_text(json.dumps(dict(images=images, annotations=anns,
                                    categories=CATEGORIES)))
    return COCO(str(path))


def predictions(coco, rng, jitter=4):
    """Per image, jittered copies of its GT boxes of the known classes plus
    random false positives, with random scores; none for the last image.
    Box edges move by up to ``jitter`` pixels."""
    samples = []
    last = max(coco.getImgIds())
    for image_id in sorted(coco.getImgIds()):
        boxes, labels = [], []
        if image_id != last:
            for ann in coco.imgToAnns[image_id]:
                if ann['category_id'] not in LABEL_CATEGORIES:
                    continue
                x, y, w, h = ann['bbox']
                for _ in range(2):
                    dx, dy, dw, dh = rng.integers(-jitter, jitter + 1, 4)
                    boxes.append([x + dx, y + dy, x + w + dw, y + h + dh])
                    labels.append(LABEL_CATEGORIES.index(ann['category_id']))
            for _ in range(3):
                x0, y0 = rng.integers(0, SIZE - 12, 2)
                boxes.append([x0, y0, x0 + 10, y0 + 10])
                labels.append(int(rng.integers(len(CLASSES))))
        boxes = np.clip(np.array(boxes, dtype=np.float32).reshape(-1, 4), 0,
                        SIZE)
        masks = np.stack([box_mask(*b.astype(int)) for b in boxes]) \
            if len(boxes) else np.zeros((0, SIZE, SIZE), np.uint8)
        n = len(boxes)
        scores, ious, maskness = (torch.from_numpy(rng.uniform(0.05, 1, n))
                                  .float() for _ in range(3))
        samples.append(dict(
            img_id=image_id, ori_shape=(SIZE, SIZE),
            pred_instances=dict(
                bboxes=torch.from_numpy(boxes),
                labels=torch.tensor(labels, dtype=torch.long),
                masks=torch.from_numpy(masks).bool(), scores=scores,
                mask_ious=ious, mask_scores=scores * ious,
                maskness=maskness)))
    return samples


def coco_results(samples, score_key):
    """The samples as COCO results (RLE masks) scored by ``score_key``."""
    results = []
    for sample in samples:
        pred = sample['pred_instances']
        scores = pred['scores'] * pred['maskness'] \
            if score_key == 'maskness' else pred[score_key]
        rles = mask_util.encode(np.asfortranarray(
            pred['masks'].numpy().astype(np.uint8).transpose(1, 2, 0)))
        results += [dict(image_id=sample['img_id'],
                         category_id=LABEL_CATEGORIES[int(label)],
                         segmentation=rle, score=float(score))
                    for rle, label, score in zip(rles, pred['labels'],
                                                 scores)]
    return results


def coco_segm_ap(coco, samples, score_key):
    """pycocotools' segm AP of the samples ranked by ``score_key``, with
    CocoMetric's settings (every image; the classes' categories)."""
    evaluator = COCOeval(coco, coco.loadRes(coco_results(samples, score_key)),
                         'segm')
    evaluator.params.imgIds = sorted(coco.getImgIds())
    evaluator.params.catIds = LABEL_CATEGORIES
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    return evaluator.stats[0]


@pytest.fixture
def split(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / 'gt.json'
    coco = write_split(path, rng)
    return path, coco, predictions(coco, rng)


@pytest.fixture
def tight_split(tmp_path):
    """As :func:`split`, box edges moved by 1 pixel at most: 2-pixel
    boundary bands of 8-20 pixel boxes then overlap enough to match."""
    rng = np.random.default_rng(0)
    path = tmp_path / 'gt.json'
    coco = write_split(path, rng)
    return path, coco, predictions(coco, rng, jitter=1)


def evaluate(metric, samples):
    metric.dataset_meta = dict(classes=CLASSES)
    metric.process({}, samples)
    return metric.compute_metrics(metric.results)


def test_rankings_equal_pycocotools_and_coco_metric(split):
    """Each ranking's AP equals pycocotools' on every image of the split
    (the last has ground truth and no detection), labels mapped to the
    categories of dataset_meta['classes'] as mmdet's CocoDataset numbers
    them (a subset of the file's categories, not sorted by id).

    Catches: evaluating only the images with detections (recall rises),
    mapping labels through the sorted category ids or in the order of
    dataset_meta['classes'], a wrong score in a
    ranking, the shared IoUs in another row or column order.
    """
    path, coco, samples = split
    out = evaluate(MaskIoUQualityMetric(str(path)), samples)
    for name, key in (('segm_mAP', 'mask_scores'),
                      ('segm_mAP_cls_score', 'scores'),
                      ('segm_mAP_maskness', 'maskness')):
        want = coco_segm_ap(COCO(str(path)), samples, key)
        assert 0.05 < want < 0.95
        assert out[name] == pytest.approx(want, abs=1e-6), name
    # mmdet's CocoMetric on the same predictions without mask scores (it
    # would rank by them) reports the cls ranking, to its 3 decimals
    coco_metric = CocoMetric(str(path), metric='segm')
    coco_metric.dataset_meta = dict(classes=CLASSES)
    plain = [dict(s, pred_instances={k: v for k, v in
                                     s['pred_instances'].items()
                                     if k != 'mask_scores'})
             for s in samples]
    coco_metric.process({}, plain)
    theirs = coco_metric.compute_metrics(coco_metric.results)['segm_mAP']
    assert theirs == round(out['segm_mAP_cls_score'], 3)


def test_true_ious_and_correlations_against_brute_force(split):
    """True MaskIoU of each detection (same-class, non-crowd GT of best box
    IoU; matched at box IoU >= 0.5) from dense masks, and every correlation
    from ranks and np.corrcoef.

    Catches: a crowd region as a match, the best mask instead of the best
    box, another class's GT, a score correlated over the wrong population.
    """
    path, coco, samples = split
    metric = MaskIoUQualityMetric(str(path), keep_pairs=True)
    out = evaluate(metric, samples)
    true, matched = [], []
    for sample in samples:
        pred = sample['pred_instances']
        gts = [a for a in coco.imgToAnns[sample['img_id']]
               if not a['iscrowd']]
        for mask, box, label in zip(pred['masks'].numpy(),
                                    pred['bboxes'].numpy(), pred['labels']):
            same = [a for a in gts
                    if a['category_id'] == LABEL_CATEGORIES[int(label)]]
            if not same:
                true.append(0.0)
                matched.append(False)
                continue
            dense = [coco.annToMask(a).astype(bool) for a in same]
            mask_ious = [(mask & g).sum() / (mask | g).sum() for g in dense]
            box_ious = [box_iou(box, a['bbox']) for a in same]
            best = int(np.argmax(box_ious))
            matched.append(box_ious[best] >= 0.5)
            true.append(mask_ious[best] if matched[-1] else max(mask_ious))
    true, matched = np.array(true), np.array(matched)
    np.testing.assert_allclose(metric.pairs['true'], true, atol=1e-9)
    assert metric.pairs['matched'].tolist() == matched.tolist()
    assert 5 < matched.sum() < len(matched)
    assert out['num_matched'] == matched.sum()
    assert out['num_detections'] == len(true)
    preds = {name: np.concatenate([s['pred_instances'][key].numpy()
                                   for s in samples])
             for name, key in (('', 'mask_ious'), ('cls_score_', 'scores'),
                               ('maskness_', 'maskness'))}
    for name, pred in preds.items():
        for suffix, keep in (('', matched), ('_all', slice(None))):
            pearson = np.corrcoef(pred[keep], true[keep])[0, 1]
            spearman = np.corrcoef(ranks(pred[keep]), ranks(true[keep]))[0,
                                                                         1]
            assert out[f'{name}pearson{suffix}'] == pytest.approx(pearson)
            assert out[f'{name}spearman{suffix}'] == pytest.approx(spearman)
    assert out['ece'] == pytest.approx(
        brute_force_ece(preds[''][matched], true[matched]))


def box_iou(box, xywh):
    x0, y0, x1, y1 = box
    gx0, gy0, gw, gh = xywh
    w = max(0, min(x1, gx0 + gw) - max(x0, gx0))
    h = max(0, min(y1, gy0 + gh) - max(y0, gy0))
    inter = w * h
    return inter / ((x1 - x0) * (y1 - y0) + gw * gh - inter)


def ranks(values):
    """Average ranks (ties share their mean rank)."""
    order = np.argsort(values, kind='stable')
    rank = np.empty(len(values))
    rank[order] = np.arange(len(values))
    for value in np.unique(values):
        tied = values == value
        rank[tied] = rank[tied].mean()
    return rank


def brute_force_ece(pred, true, num_bins=10):
    total = 0.0
    for b in range(num_bins):
        lo, hi = b / num_bins, (b + 1) / num_bins
        inside = (pred >= lo) & ((pred < hi) | (b == num_bins - 1))
        if inside.any():
            total += inside.sum() * abs(pred[inside].mean() -
                                        true[inside].mean())
    return total / len(pred)


def test_calibration_bins_by_hand():
    """Catches: 1.0 outside the last bin, counts off by one bin, means of
    the wrong array."""
    pred = np.array([0.05, 0.08, 0.55, 1.0, 0.95])
    true = np.array([0.2, 0.4, 0.5, 0.9, 0.7])
    bins = calibration_bins(pred, true)
    assert bins['counts'].tolist() == [2, 0, 0, 0, 0, 1, 0, 0, 0, 2]
    np.testing.assert_allclose(bins['predicted'][[0, 5, 9]],
                               [0.065, 0.55, 0.975])
    np.testing.assert_allclose(bins['true'][[0, 5, 9]], [0.3, 0.5, 0.8])
    # (2 * |0.065 - 0.3| + |0.55 - 0.5| + 2 * |0.975 - 0.8|) / 5
    assert expected_calibration_error(pred, true) == pytest.approx(0.174)


def test_predictions_without_maskness_are_named(split):
    path, _, samples = split
    pred = dict(samples[0]['pred_instances'])
    pred.pop('maskness')
    with pytest.raises(KeyError, match='pred_instances.maskness'):
        MaskIoUQualityMetric(str(path)).process(
            {}, [dict(samples[0], pred_instances=pred)])


def boundary_band(mask, width):
    """Brute force: the mask minus its erosion by a 3x3 square ``width``
    times, the image border counting as background."""
    inner = np.pad(mask.astype(bool), 1)
    for _ in range(width):
        padded = np.pad(inner, 1)
        inner = np.all([padded[1 + dy:padded.shape[0] - 1 + dy,
                               1 + dx:padded.shape[1] - 1 + dx]
                        for dy in (-1, 0, 1) for dx in (-1, 0, 1)], axis=0)
    return mask.astype(bool) & ~inner[1:-1, 1:-1]


def test_boundary_match_ious_against_brute_force():
    """min(mask IoU, boundary-band IoU) on non-crowd columns, the mask IoU
    kept on crowd ones; bands 2 px wide on a 64 x 64 image (0.02 x its
    diagonal, rounded), a mask on the image border banded there too.

    Catches: the band IoU alone (no min), another band width, crowd columns
    rescored, rows and columns swapped.
    """
    # a 2-pixel ring is all band: its band IoU with the filled box is 1
    ring = box_mask(40, 5, 60, 25) - box_mask(42, 7, 58, 23)
    dets = [box_mask(10, 10, 30, 30), box_mask(0, 40, 20, 64), ring]
    gts = [box_mask(12, 11, 31, 33), box_mask(0, 38, 22, 64),
           box_mask(5, 5, 35, 35), box_mask(40, 5, 60, 25)]
    crowd = np.array([False, False, True, False])
    enc = [mask_util.encode(np.asfortranarray(m)) for m in dets + gts]
    det_rles, gt_rles = enc[:len(dets)], enc[len(dets):]
    mask_ious = np.asarray(mask_util.iou(det_rles, gt_rles,
                                         crowd.astype(np.uint8).tolist()))
    out = boundary_match_ious(mask_ious, det_rles, gt_rles, crowd)
    width = int(round(DILATION_RATIO * np.hypot(SIZE, SIZE)))
    assert width == 2
    for i, det in enumerate(dets):
        for j, gt in enumerate(gts):
            if crowd[j]:
                assert out[i, j] == mask_ious[i, j]
                continue
            a, b = boundary_band(det, width), boundary_band(gt, width)
            band_iou = (a & b).sum() / (a | b).sum()
            assert out[i, j] == pytest.approx(
                min(mask_ious[i, j], band_iou), abs=1e-12), (i, j)
    # the bands decide these pairs, the masks the ring's
    assert out[0, 0] < mask_ious[0, 0] and out[1, 1] < mask_ious[1, 1]
    assert out[2, 3] == pytest.approx(mask_ious[2, 3])
    assert mask_ious[2, 3] < 0.5


def test_boundary_ap_equals_faster_coco_eval(tight_split):
    """With ``boundary=True`` each ranking's Boundary AP equals
    faster-coco-eval's ``iouType='boundary'`` on every image of the split,
    and is below its segm AP (boundary matching is stricter); the segm
    keys are those of a metric without it.

    Catches: the mask IoUs reused for Boundary AP, boundary IoUs in another
    row or column order, a ranking's score swapped, the gain taken from the
    segm keys.
    """
    from faster_coco_eval import COCO as FasterCOCO
    from faster_coco_eval import COCOeval_faster
    path, _, samples = tight_split
    out = evaluate(MaskIoUQualityMetric(str(path), boundary=True), samples)
    plain = evaluate(MaskIoUQualityMetric(str(path)), samples)
    assert {k: v for k, v in out.items()
            if not k.startswith('boundary')} == pytest.approx(
                plain, nan_ok=True)
    for name, key in (('boundary_mAP', 'mask_scores'),
                      ('boundary_mAP_cls_score', 'scores'),
                      ('boundary_mAP_maskness', 'maskness')):
        gt = FasterCOCO(str(path))
        evaluator = COCOeval_faster(
            gt, gt.loadRes(coco_results(samples, key)), 'boundary',
            print_function=lambda *_: None)
        evaluator.params.imgIds = sorted(gt.getImgIds())
        evaluator.params.catIds = LABEL_CATEGORIES
        evaluator.run()
        want = evaluator.stats[0]
        assert 0.02 < want < out[name.replace('boundary', 'segm')], name
        assert out[name] == pytest.approx(want, abs=1e-6), name
    assert out['boundary_mAP_gain'] == pytest.approx(
        out['boundary_mAP'] - out['boundary_mAP_cls_score'])
