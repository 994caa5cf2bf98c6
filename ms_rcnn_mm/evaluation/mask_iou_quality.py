"""Does mask scoring help? Segm AP with and without it, and how well the
predicted MaskIoU tracks the true one."""
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence

import numpy as np
import pycocotools.mask as mask_util
from mmengine.evaluator import BaseMetric
from mmengine.fileio import get_local_path
from mmengine.logging import MMLogger
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from scipy import stats

from ..registry import METRICS

#: box IoU at which a detection counts as matched to a same-class GT: the
#: positives the MaskIoU head is trained on
MATCH_IOU = 0.5


def correlations(pred: np.ndarray, true: np.ndarray) -> tuple:
    """Pearson and Spearman correlation; NaN with fewer than 3 points or
    no spread."""
    if len(pred) < 3 or np.ptp(pred) == 0 or np.ptp(true) == 0:
        return float('nan'), float('nan')
    return (float(stats.pearsonr(pred, true)[0]),
            float(stats.spearmanr(pred, true)[0]))


def segm_ap(coco: COCO, detections: List[dict], score_key: str) -> float:
    """COCO segm mAP@[.5:.95] of ``detections`` ranked by ``score_key``."""
    if not detections:
        return 0.0
    results = [dict(image_id=d['image_id'], category_id=d['category_id'],
                    segmentation=d['segmentation'], score=d[score_key])
               for d in detections]
    evaluator = COCOeval(coco, coco.loadRes(results), 'segm')
    evaluator.params.imgIds = sorted({d['image_id'] for d in detections})
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    return float(evaluator.stats[0])


@METRICS.register_module()
class MaskIoUQualityMetric(BaseMetric):
    """Segm AP with and without mask scoring, and MaskIoU correlations.

    From one model's predictions it reports:

    - ``segm_mAP``: masks ranked by ``mask_scores`` (cls x MaskIoU);
    - ``segm_mAP_cls_score``: the same masks ranked by the classification
      score alone (Mask R-CNN's ranking), and ``segm_mAP_gain``;
    - ``maskiou_pearson`` / ``maskiou_spearman``: predicted MaskIoU against
      the true IoU of each predicted mask with its GT, over detections whose
      box matches a same-class GT at IoU >= 0.5 (the population the head is
      trained on), and ``cls_score_pearson`` for the classification score;
    - ``maskiou_pearson_all`` / ``maskiou_spearman_all``: over all
      detections (true IoU: best same-class GT, 0 if none); low by design,
      the head never sees false positives.

    Args:
        ann_file (str): COCO annotation file of the evaluated split.
        keep_pairs (bool): Keep the per-detection scores and true IoUs in
            :attr:`pairs` and the detections (COCO-style dicts with RLE
            masks) in :attr:`detections`, for plots. Defaults to False.
        collect_device (str): As :class:`BaseMetric`. Defaults to 'cpu'.
        prefix (str, optional): Metric name prefix. Defaults to 'maskiou'.
    """
    default_prefix: Optional[str] = 'maskiou'

    def __init__(self,
                 ann_file: str,
                 keep_pairs: bool = False,
                 collect_device: str = 'cpu',
                 prefix: Optional[str] = None) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        with get_local_path(ann_file) as local_path:
            self.coco = COCO(local_path)
        self.keep_pairs = keep_pairs
        self.pairs: Dict[str, np.ndarray] = {}
        self.detections: List[dict] = []

    def process(self, data_batch: dict, data_samples: Sequence[dict]) -> None:
        for sample in data_samples:
            pred = sample['pred_instances']
            if 'mask_ious' not in pred:
                raise KeyError(
                    'MaskIoUQualityMetric needs pred_instances.mask_ious: '
                    'evaluate a model with ms_rcnn_mm.MaskScoringRoIHead')
            masks = pred['masks'].cpu().numpy().astype(np.uint8)
            rles = mask_util.encode(np.asfortranarray(masks.transpose(1, 2,
                                                                      0)))
            # one entry per image: mmengine keeps `dataset size` entries
            self.results.append([
                dict(image_id=int(sample['img_id']),
                     category_id=self.coco.getCatIds()[int(
                         pred['labels'][k])],
                     segmentation=rle,
                     bbox=pred['bboxes'][k].cpu().numpy().tolist(),
                     score=float(pred['scores'][k]),
                     mask_score=float(pred['mask_scores'][k]),
                     mask_iou=float(pred['mask_ious'][k]))
                for k, rle in enumerate(rles)
            ])

    def _true_ious(self, det: dict) -> tuple:
        """(true mask IoU with the best same-class GT, box-matched?)."""
        ann_ids = self.coco.getAnnIds(imgIds=[det['image_id']],
                                      catIds=[det['category_id']],
                                      iscrowd=False)
        if not ann_ids:
            return 0.0, False
        anns = self.coco.loadAnns(ann_ids)
        gt_rles = [self.coco.annToRLE(a) for a in anns]
        mask_ious = mask_util.iou([det['segmentation']], gt_rles,
                                  [0] * len(gt_rles))[0]
        x1, y1, x2, y2 = det['bbox']
        box_ious = mask_util.iou([[x1, y1, x2 - x1, y2 - y1]],
                                 [a['bbox'] for a in anns],
                                 [0] * len(anns))[0]
        best = int(np.argmax(box_ious))
        if box_ious[best] >= MATCH_IOU:
            return float(mask_ious[best]), True
        return float(mask_ious.max()), False

    def compute_metrics(self, results: list) -> Dict[str, float]:
        logger = MMLogger.get_current_instance()
        results = [det for image in results for det in image]
        true, matched = zip(*map(self._true_ious, results)) if results \
            else ((), ())
        true, matched = np.array(true), np.array(matched, bool)
        pred = np.array([r['mask_iou'] for r in results])
        cls = np.array([r['score'] for r in results])
        with_scoring = segm_ap(self.coco, results, 'mask_score')
        without = segm_ap(self.coco, results, 'score')
        metrics = OrderedDict(
            segm_mAP=with_scoring, segm_mAP_cls_score=without,
            segm_mAP_gain=with_scoring - without,
            # floats: mmengine's JSON logs write integer metrics as null
            num_matched=float(matched.sum()),
            num_detections=float(len(results)))
        for suffix, keep in (('', matched), ('_all', slice(None))):
            pearson, spearman = correlations(pred[keep], true[keep])
            metrics[f'pearson{suffix}'] = pearson
            metrics[f'spearman{suffix}'] = spearman
        metrics['cls_score_pearson'] = correlations(cls[matched],
                                                    true[matched])[0]
        if self.keep_pairs:
            self.pairs = dict(predicted=pred, true=true, cls_score=cls,
                              matched=matched)
            self.detections = results
        logger.info('mask scoring: ' + ', '.join(
            f'{k}={v:.4f}' for k, v in metrics.items()))
        return metrics
