"""Does mask scoring help? Segm AP under three rankings of the same masks,
and how well each score tracks the true MaskIoU."""
import contextlib
import io
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import pycocotools.mask as mask_util
from mmengine.evaluator import BaseMetric
from mmengine.fileio import get_local_path
from mmengine.logging import MMLogger
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from scipy import stats

from ..registry import METRICS
from .boundary import boundary_function, boundary_match_ious

#: box IoU at which a detection counts as matched to a same-class GT: the
#: positives the MaskIoU head is trained on
MATCH_IOU = 0.5
#: the per-detection scores compared: metric-name stem, detection key.
#: ``segm_mAP`` ranks by the mask score (cls x MaskIoU), as ``CocoMetric``.
RANKINGS = (('segm_mAP', 'mask_score'), ('segm_mAP_cls_score', 'score'),
            ('segm_mAP_maskness', 'maskness_score'))
#: quality scores correlated with the true MaskIoU: name prefix, key
QUALITY_SCORES = (('', 'mask_iou'), ('cls_score_', 'score'),
                  ('maskness_', 'maskness'))
#: bins of the expected calibration error of the predicted MaskIoU
ECE_BINS = 10
#: maximum detections per image in COCO's segm AP
MAX_DETS = 100


def correlations(pred: np.ndarray, true: np.ndarray) -> Tuple[float, float]:
    """Pearson and Spearman correlation; NaN with fewer than 3 points or
    no spread."""
    if len(pred) < 3 or np.ptp(pred) == 0 or np.ptp(true) == 0:
        return float('nan'), float('nan')
    return (float(stats.pearsonr(pred, true)[0]),
            float(stats.spearmanr(pred, true)[0]))


def calibration_bins(pred: np.ndarray, true: np.ndarray,
                     num_bins: int = ECE_BINS) -> Dict[str, np.ndarray]:
    """Mean prediction, mean truth and count per equal-width bin of the
    prediction on [0, 1] (the last bin holds 1.0); NaN means where empty."""
    index = np.clip((pred * num_bins).astype(int), 0, num_bins - 1)
    counts = np.bincount(index, minlength=num_bins)
    with np.errstate(invalid='ignore', divide='ignore'):
        return dict(
            predicted=np.bincount(index, pred, num_bins) / counts,
            true=np.bincount(index, true, num_bins) / counts,
            counts=counts)


def expected_calibration_error(pred: np.ndarray, true: np.ndarray,
                               num_bins: int = ECE_BINS) -> float:
    """Count-weighted mean of |mean prediction - mean truth| over the bins
    of :func:`calibration_bins`; NaN without points."""
    if len(pred) == 0:
        return float('nan')
    bins = calibration_bins(pred, true, num_bins)
    full = bins['counts'] > 0
    gaps = np.abs(bins['predicted'][full] - bins['true'][full])
    return float((gaps * bins['counts'][full]).sum() / len(pred))


class SharedIoUEval(COCOeval):
    """COCO's segm evaluation with the mask IoUs computed once, outside.

    ``ious[image_id]`` holds the IoU of every detection of the image (rows,
    by ``row_of[detection id]``) with every ground truth of it (columns, by
    ``col_of[annotation id]``; crowd columns as COCO computes them). Each
    ranking of the same detections then reuses them: only the matching and
    the accumulation run again.
    """

    def __init__(self, coco_gt: COCO, coco_dt: COCO, ious: Dict[int,
                                                                np.ndarray],
                 row_of: Dict[int, int], col_of: Dict[int, int]) -> None:
        super().__init__(coco_gt, coco_dt, 'segm')
        self.shared_ious, self.row_of, self.col_of = ious, row_of, col_of

    def computeIoU(self, imgId: int, catId: int):  # noqa: N802 (COCO's)
        gt, dt = self._gts[imgId, catId], self._dts[imgId, catId]
        if not gt or not dt:
            return []
        # COCO's order: by score, stable, cut at maxDets
        order = np.argsort([-d['score'] for d in dt], kind='mergesort')
        rows = [self.row_of[dt[i]['id']]
                for i in order[:self.params.maxDets[-1]]]
        cols = [self.col_of[g['id']] for g in gt]
        return self.shared_ious[imgId][np.ix_(rows, cols)]


def segm_ap(evaluator: SharedIoUEval, img_ids: List[int],
            cat_ids: List[int]) -> float:
    """COCO segm AP@[.5:.95] (all areas, 100 detections) under the scores
    the detections hold now; equals ``COCOeval.stats[0]``."""
    params = evaluator.params
    params.imgIds, params.catIds = img_ids, cat_ids
    # AP@[.5:.95] reads only these: the other ranges and limits are skipped
    params.areaRng, params.areaRngLbl = [[0, 1e10]], ['all']
    params.maxDets = [MAX_DETS]
    with contextlib.redirect_stdout(io.StringIO()):  # COCO's progress
        evaluator.evaluate()
        evaluator.accumulate()
    precision = evaluator.eval['precision'][:, :, :, 0, 0]
    valid = precision > -1
    return float(precision[valid].mean()) if valid.any() else -1.0


def add_gain(metrics: Dict[str, float], stem: str) -> None:
    """``{stem}_mAP_gain``: AP ranked by the mask score minus AP ranked by
    the classification score alone."""
    metrics[f'{stem}_mAP_gain'] = (metrics[f'{stem}_mAP'] -
                                   metrics[f'{stem}_mAP_cls_score'])


@METRICS.register_module()
class MaskIoUQualityMetric(BaseMetric):
    """Segm AP under three rankings of the same masks, and how well each
    score tracks the true MaskIoU.

    It evaluates every image of the annotation file and maps labels to
    categories through ``dataset_meta['classes']`` (:meth:`category_ids`),
    as ``CocoMetric`` does, and returns, under its prefix (``maskiou/`` by
    default):

    - ``segm_mAP``: masks ranked by ``mask_scores`` (cls x MaskIoU);
      ``segm_mAP_cls_score``: by the classification score alone (Mask
      R-CNN's ranking; equals ``CocoMetric``'s segm AP without mask scores);
      ``segm_mAP_maskness``: by cls x maskness (SOLOv2's training-free
      score); ``segm_mAP_gain``: ``segm_mAP - segm_mAP_cls_score``;
    - ``pearson``, ``spearman``: predicted MaskIoU against the true IoU of
      each predicted mask with its GT, over the detections whose box matches
      a same-class GT at IoU >= 0.5 (the population the head is trained
      on); ``cls_score_pearson``, ``cls_score_spearman``,
      ``maskness_pearson``, ``maskness_spearman``: the same for the
      classification score and maskness;
    - the six with ``_all`` appended: over all detections (true IoU: that of
      the best same-class GT, 0 if none), where false positives count;
    - ``ece``: expected calibration error of the predicted MaskIoU over the
      matched detections (:data:`ECE_BINS` bins);
    - ``num_matched``, ``num_detections``;
    - with ``boundary=True``, ``boundary_mAP``, ``boundary_mAP_cls_score``,
      ``boundary_mAP_maskness`` and ``boundary_mAP_gain``: the same three
      rankings under Boundary AP (Cheng et al., CVPR 2021; equals
      faster-coco-eval's ``iouType='boundary'``), which weighs mask edges
      where mask AP is dominated by object interiors.

    Args:
        ann_file (str): COCO annotation file of the evaluated split.
        keep_pairs (bool): Keep the per-detection scores and true IoUs in
            :attr:`pairs` and the detections (COCO-style dicts with RLE
            masks, boxes as x1, y1, x2, y2) in :attr:`detections`, for
            plots. Defaults to False.
        boundary (bool): Also report Boundary AP of each ranking; needs
            the ``[boundary]`` extra (faster-coco-eval). Defaults to False.
        collect_device (str): As :class:`BaseMetric`. Defaults to 'cpu'.
        prefix (str, optional): Metric name prefix. Defaults to 'maskiou'.
    """
    default_prefix: Optional[str] = 'maskiou'

    def __init__(self,
                 ann_file: str,
                 keep_pairs: bool = False,
                 boundary: bool = False,
                 collect_device: str = 'cpu',
                 prefix: Optional[str] = None) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        with get_local_path(ann_file) as local_path:
            self.coco = COCO(local_path)
        self.keep_pairs = keep_pairs
        if boundary:  # fail here, before a whole evaluation runs
            boundary_function()
        self.boundary = boundary
        self.pairs: Dict[str, np.ndarray] = {}
        self.detections: List[dict] = []

    def category_ids(self) -> List[int]:
        """The COCO category id of each label.

        Label ``k`` is the ``k``-th category of the annotation file among
        those named in ``dataset_meta['classes']`` (all of them without
        dataset meta), in the file's order: how mmdet's ``CocoDataset``
        numbers its labels and ``CocoMetric`` maps them back.

        Raises:
            KeyError: a class of ``dataset_meta`` is not a category of the
                file (both are named).
        """
        if not self.dataset_meta or 'classes' not in self.dataset_meta:
            return self.coco.getCatIds()
        names = self.dataset_meta['classes']
        known = [cat['name'] for cat in self.coco.dataset['categories']]
        missing = [name for name in names if name not in known]
        if missing:
            raise KeyError(
                f'classes {missing} of dataset_meta are not categories of the '
                f'annotation file (it has {known})')
        return self.coco.getCatIds(catNms=list(names))

    def process(self, data_batch: dict, data_samples: Sequence[dict]) -> None:
        cat_ids = self.category_ids()
        for sample in data_samples:
            pred = sample['pred_instances']
            missing = [k for k in ('mask_ious', 'maskness') if k not in pred]
            if missing:
                raise KeyError(
                    f'MaskIoUQualityMetric needs pred_instances.{missing[0]}: '
                    'evaluate a model with ms_rcnn_mm.MaskScoringRoIHead')
            masks = pred['masks'].cpu().numpy().astype(np.uint8)
            rles = mask_util.encode(np.asfortranarray(masks.transpose(1, 2,
                                                                      0)))
            fields = zip(rles, pred['labels'].tolist(),
                         pred['bboxes'].cpu().numpy().tolist(),
                         *(pred[k].cpu().numpy().astype(float).tolist()
                           for k in ('scores', 'mask_scores', 'mask_ious',
                                     'maskness')))
            # one entry per image, with or without detections: mmengine
            # keeps `dataset size` entries
            self.results.append((int(sample['img_id']), [
                dict(segmentation=rle, category_id=cat_ids[label],
                     box=box, score=score, mask_score=mask_score,
                     mask_iou=mask_iou, maskness=maskness,
                     maskness_score=score * maskness)
                for rle, label, box, score, mask_score, mask_iou, maskness in
                fields
            ]))

    def _image_ious(self, image_id: int, dets: List[dict],
                    cat_ids: List[int]) -> tuple:
        """Mask IoUs of an image's detections with its ground truth, one
        call for the whole image, and each detection's true MaskIoU.

        Returns:
            tuple: the ``(num_dets, num_gts)`` IoUs (COCO's, crowd columns
            included), the ground-truth annotation ids of the columns, the
            true MaskIoU ``(num_dets, )`` and whether each box matched.
        """
        anns = self.coco.loadAnns(self.coco.getAnnIds(
            imgIds=[image_id], catIds=cat_ids))
        crowd = np.array([bool(a.get('iscrowd', 0)) for a in anns], bool)
        for ann in anns:  # decoded once: COCOeval reuses RLEs it is given
            ann['segmentation'] = self.coco.annToRLE(ann)
        ious = mask_util.iou([d['segmentation'] for d in dets],
                             [a['segmentation'] for a in anns],
                             crowd.astype(np.uint8).tolist())
        ious = np.asarray(ious, dtype=np.float64).reshape(len(dets),
                                                          len(anns))
        ann_ids = [a['id'] for a in anns]
        if not len(anns) or not len(dets):
            empty = np.zeros(len(dets))
            return ious, ann_ids, empty, empty.astype(bool)
        boxes = np.array([d['box'] for d in dets], dtype=np.float64)
        box_ious = np.asarray(mask_util.iou(
            np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], 1),
            [a['bbox'] for a in anns], [0] * len(anns))).reshape(ious.shape)
        same = (np.array([d['category_id'] for d in dets])[:, None] ==
                np.array([a['category_id'] for a in anns])[None]) & ~crowd
        best = np.where(same, box_ious, -1).argmax(1)
        rows = np.arange(len(dets))
        matched = same.any(1) & (box_ious[rows, best] >= MATCH_IOU)
        true = np.where(matched, ious[rows, best],
                        np.where(same, ious, 0).max(1))
        return ious, ann_ids, true, matched

    def _boundary_ious(self, results: list, ious: Dict[int, np.ndarray],
                       gt_ids: Dict[int, List[int]]) -> Dict[int, np.ndarray]:
        """Per image, the IoUs Boundary AP matches with, in the rows and
        columns of the mask IoUs (ground-truth RLEs as decoded by
        :meth:`_image_ious`)."""
        out = {}
        for image_id, dets in results:
            anns = self.coco.loadAnns(gt_ids[image_id])
            out[image_id] = boundary_match_ious(
                ious[image_id], [d['segmentation'] for d in dets],
                [a['segmentation'] for a in anns],
                np.array([bool(a.get('iscrowd', 0)) for a in anns], bool))
        return out

    def _average_precisions(self, results: list, cat_ids: List[int],
                            ious: Dict[int, np.ndarray],
                            gt_ids: Dict[int, List[int]],
                            stem: str = 'segm') -> Dict[str, float]:
        """AP of every ranking of :data:`RANKINGS` under the given IoUs
        (mask IoUs: segm AP), named with ``stem`` for ``segm``."""
        names = [(name.replace('segm', stem, 1), key)
                 for name, key in RANKINGS]
        dets = [det for _, image in results for det in image]
        if not dets:
            return {name: 0.0 for name, _ in names}
        with contextlib.redirect_stdout(io.StringIO()):
            coco_dt = self.coco.loadRes([
                dict(image_id=image_id, category_id=det['category_id'],
                     segmentation=det['segmentation'], score=det['score'])
                for image_id, image in results for det in image])
        # loadRes numbers the detections 1.. in this order
        row_of, det_id = {}, 1
        for _, image in results:
            for row in range(len(image)):
                row_of[det_id] = row
                det_id += 1
        col_of = {ann_id: col for ids in gt_ids.values()
                  for col, ann_id in enumerate(ids)}
        img_ids = sorted(self.coco.getImgIds())
        aps = {}
        for name, key in names:
            for ann, det in zip(coco_dt.dataset['annotations'], dets):
                ann['score'] = det[key]
            aps[name] = segm_ap(
                SharedIoUEval(self.coco, coco_dt, ious, row_of, col_of),
                img_ids, cat_ids)
        return aps

    def compute_metrics(self, results: list) -> Dict[str, float]:
        logger = MMLogger.get_current_instance()
        cat_ids = self.category_ids()
        ious, gt_ids, true, matched = {}, {}, [], []
        for image_id, dets in results:
            (ious[image_id], gt_ids[image_id], image_true,
             image_matched) = self._image_ious(image_id, dets, cat_ids)
            true.append(image_true)
            matched.append(image_matched)
        true = np.concatenate(true) if true else np.zeros(0)
        matched = np.concatenate(matched) if matched else np.zeros(0, bool)
        dets = [det for _, image in results for det in image]
        scores = {key: np.array([d[key] for d in dets], dtype=np.float64)
                  for _, key in QUALITY_SCORES}
        metrics = OrderedDict(
            self._average_precisions(results, cat_ids, ious, gt_ids))
        add_gain(metrics, 'segm')
        if self.boundary:
            metrics.update(self._average_precisions(
                results, cat_ids, self._boundary_ious(results, ious, gt_ids),
                gt_ids, stem='boundary'))
            add_gain(metrics, 'boundary')
        for suffix, keep in (('', matched), ('_all', slice(None))):
            for prefix, key in QUALITY_SCORES:
                pearson, spearman = correlations(scores[key][keep],
                                                 true[keep])
                metrics[f'{prefix}pearson{suffix}'] = pearson
                metrics[f'{prefix}spearman{suffix}'] = spearman
        metrics['ece'] = expected_calibration_error(
            scores['mask_iou'][matched], true[matched])
        # floats: mmengine's JSON logs write integer metrics as null
        metrics['num_matched'] = float(matched.sum())
        metrics['num_detections'] = float(len(dets))
        if self.keep_pairs:
            self.pairs = dict(predicted=scores['mask_iou'], true=true,
                              cls_score=scores['score'],
                              maskness=scores['maskness'], matched=matched)
            self.detections = [
                dict(det, image_id=image_id, bbox=det['box'])
                for image_id, image in results for det in image]
        logger.info('mask scoring: ' + ', '.join(
            f'{k}={v:.4f}' for k, v in metrics.items()))
        return metrics
