"""Figures of ``make demo``: how well the mask scores track mask quality.

Every function takes what :class:`~ms_rcnn_mm.evaluation.MaskIoUQualityMetric`
keeps with ``keep_pairs=True`` (its ``pairs`` and ``detections``), or the
detections of one image (:func:`instances_to_detections`,
``tools/demo/image_demo.py``), and writes one PNG; matplotlib runs headless
(the Agg backend).
"""
import os.path as osp
from typing import Dict, List, Sequence

import cv2
import matplotlib
import numpy as np
import pycocotools.mask as mask_util

from .evaluation import calibration_bins, expected_calibration_error

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is set)

#: the scores compared in the figures: key of ``pairs``, label
SCORES = (('predicted', 'MaskIoU head'), ('cls_score', 'classification score'),
          ('maskness', 'maskness'))
#: true-MaskIoU bins of the paper-style plot (Fig. 2 of the paper)
IOU_BINS = np.linspace(0, 1, 11)
#: figure resolution (dots per inch)
DPI = 100
#: detections drawn per image of the grid, best mask scores first
GRID_TOP_K = 6
#: detections below this mask score are left out of the grid
GRID_MIN_SCORE = 0.3
#: grid side (images per row and column)
GRID_SIDE = 3
#: mask fill opacity in the grid
MASK_ALPHA = 0.45


def _save(fig: plt.Figure, path: str) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def score_scatter(pairs: Dict[str, np.ndarray], path: str) -> None:
    """Predicted MaskIoU and classification score against the true MaskIoU.

    One panel per score, over the box-matched detections, with the y = x
    line: a perfect quality score lies on it.

    Args:
        pairs (dict): ``predicted``, ``cls_score``, ``true`` (``(n, )``
            floats) and ``matched`` (``(n, )`` bools).
        path (str): The PNG to write.
    """
    keep = pairs['matched']
    fig, axes = plt.subplots(1, len(SCORES), figsize=(4.5 * len(SCORES), 4.2))
    for ax, (key, title) in zip(axes, SCORES):
        ax.scatter(pairs['true'][keep], pairs[key][keep], s=4, alpha=0.5)
        ax.plot([0, 1], [0, 1], 'k--', lw=1, label='y = x')
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel='true MaskIoU', ylabel=title,
               title=f'{title} ({int(keep.sum())} matched detections)')
        ax.legend(loc='upper left')
    _save(fig, path)


def binned_means(values: np.ndarray, true: np.ndarray,
                 bins: np.ndarray = IOU_BINS) -> np.ndarray:
    """Mean of ``values`` in each bin of ``true`` (NaN for an empty bin).

    Args:
        values (np.ndarray): ``(n, )`` scores.
        true (np.ndarray): ``(n, )`` true MaskIoUs in [0, 1].
        bins (np.ndarray): Bin edges; the last bin includes its right edge.

    Returns:
        np.ndarray: ``(len(bins) - 1, )`` means.
    """
    index = np.clip(np.digitize(true, bins) - 1, 0, len(bins) - 2)
    sums = np.bincount(index, values, minlength=len(bins) - 1)
    counts = np.bincount(index, minlength=len(bins) - 1)
    with np.errstate(invalid='ignore', divide='ignore'):
        return sums / counts


def score_per_iou_bin(pairs: Dict[str, np.ndarray], path: str) -> None:
    """The paper's plot: average score per true-MaskIoU bin.

    Over the box-matched detections, each score's mean in each bin of the
    true MaskIoU; a score that measures mask quality follows y = x, the
    classification score stays flat.

    Args:
        pairs (dict): As :func:`score_scatter`.
        path (str): The PNG to write.
    """
    keep = pairs['matched']
    centres = (IOU_BINS[:-1] + IOU_BINS[1:]) / 2
    fig, ax = plt.subplots(figsize=(5, 4.2))
    for key, label in SCORES:
        means = binned_means(pairs[key][keep], pairs['true'][keep])
        ax.plot(centres, means, 'o-', label=label)
    ax.plot([0, 1], [0, 1], 'k--', lw=1, label='y = x')
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel='true MaskIoU',
           ylabel='average score', title='average score per true-MaskIoU bin')
    ax.legend(loc='upper left')
    _save(fig, path)


def reliability(pairs: Dict[str, np.ndarray], path: str) -> None:
    """Reliability plot of the predicted MaskIoU over the matched detections.

    Per bin of the prediction (:func:`~ms_rcnn_mm.evaluation.calibration_bins`
    with :data:`~ms_rcnn_mm.evaluation.ECE_BINS` bins), the mean true MaskIoU
    against the mean prediction, each point labelled with its count; a
    calibrated head lies on y = x.

    Args:
        pairs (dict): As :func:`score_scatter`.
        path (str): The PNG to write.
    """
    keep = pairs['matched']
    pred, true = pairs['predicted'][keep], pairs['true'][keep]
    bins = calibration_bins(pred, true)
    full = bins['counts'] > 0
    fig, ax = plt.subplots(figsize=(5, 4.2))
    ax.plot(bins['predicted'][full], bins['true'][full], 'o-',
            label='MaskIoU head')
    for x, y, n in zip(bins['predicted'][full], bins['true'][full],
                       bins['counts'][full]):
        ax.annotate(str(n), (x, y), textcoords='offset points',
                    xytext=(4, -10), fontsize=7)
    ax.plot([0, 1], [0, 1], 'k--', lw=1, label='y = x')
    ece = expected_calibration_error(pred, true)
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel='mean predicted MaskIoU',
           ylabel='mean true MaskIoU',
           title=f'reliability (ECE {ece:.3f}, {len(pred)} matched)')
    ax.legend(loc='upper left')
    _save(fig, path)


def best_detections(detections: Sequence[dict],
                    min_score: float = GRID_MIN_SCORE) -> List[dict]:
    """The detections whose mask score is at least ``min_score``, best
    first."""
    return sorted((d for d in detections if d['mask_score'] >= min_score),
                  key=lambda d: -d['mask_score'])


def _draw(ax: plt.Axes, img: np.ndarray, detections: List[dict],
          class_names: Dict[int, str]) -> None:
    """Overlay masks (one colour each) labelled by their mask score."""
    colours = plt.get_cmap('tab10')
    canvas = img.astype(np.float32) / 255
    for k, det in enumerate(detections):
        mask = mask_util.decode(det['segmentation']).astype(bool)
        colour = np.array(colours(k % 10)[:3])
        canvas[mask] = (1 - MASK_ALPHA) * canvas[mask] + MASK_ALPHA * colour
    ax.imshow(canvas)
    for k, det in enumerate(detections):
        x1, y1 = det['bbox'][:2]
        ax.text(x1, y1, f"{class_names[det['category_id']]} "
                f"{det['mask_score']:.2f}", fontsize=7, color='white',
                va='bottom', bbox=dict(facecolor=colours(k % 10), alpha=0.8,
                                       pad=1, edgecolor='none'))
    ax.axis('off')


def detection_grid(detections: Sequence[dict], image_paths: Dict[int, str],
                   class_names: Dict[int, str], path: str) -> None:
    """A grid of validation images with their masks labelled by mask score.

    The first ``GRID_SIDE ** 2`` images (by id); on each, the
    ``GRID_TOP_K`` detections of highest mask score above
    ``GRID_MIN_SCORE``, labelled ``class mask_score``.

    Args:
        detections (Sequence[dict]): COCO-style results with ``image_id``,
            ``category_id``, ``segmentation`` (RLE), ``bbox`` (x1, y1, x2,
            y2) and ``mask_score``.
        image_paths (dict): Image file of each image id.
        class_names (dict): Class name of each category id.
        path (str): The PNG to write.

    Raises:
        FileNotFoundError: An image file is missing (its path is named).
    """
    ids = sorted(image_paths)[:GRID_SIDE**2]
    fig, axes = plt.subplots(GRID_SIDE, GRID_SIDE, figsize=(10, 10))
    for ax in axes.flat[len(ids):]:
        ax.axis('off')
    for ax, image_id in zip(axes.flat, ids):
        img = cv2.imread(image_paths[image_id])
        if img is None:
            raise FileNotFoundError(
                f'detection_grid: cannot read image {image_id} at '
                f'{image_paths[image_id]}')
        shown = best_detections(
            [d for d in detections if d['image_id'] == image_id])[:GRID_TOP_K]
        _draw(ax, cv2.cvtColor(img, cv2.COLOR_BGR2RGB), shown, class_names)
        ax.set_title(osp.basename(image_paths[image_id]), fontsize=8)
    _save(fig, path)


def instances_to_detections(pred_instances) -> List[dict]:
    """One image's ``pred_instances`` as the detection dicts drawn here.

    Args:
        pred_instances (InstanceData): ``bboxes``, ``labels``, ``scores``,
            binary ``masks`` and ``mask_scores`` (what
            :class:`~ms_rcnn_mm.models.MaskScoringRoIHead` predicts).

    Returns:
        list[dict]: ``category_id`` (the label), ``bbox`` (x1, y1, x2, y2),
        ``score``, ``mask_iou``, ``mask_score`` and ``segmentation`` (RLE).
    """
    masks = pred_instances.masks.cpu().numpy().astype(np.uint8)
    rles = mask_util.encode(np.asfortranarray(masks.transpose(1, 2, 0)))
    fields = zip(pred_instances.labels.tolist(),
                 pred_instances.bboxes.tolist(),
                 pred_instances.scores.tolist(),
                 pred_instances.mask_ious.tolist(),
                 pred_instances.mask_scores.tolist(), rles)
    return [dict(category_id=label, bbox=bbox, score=score,
                 mask_iou=mask_iou, mask_score=mask_score, segmentation=rle)
            for label, bbox, score, mask_iou, mask_score, rle in fields]


def draw_image(img: np.ndarray, detections: Sequence[dict],
               class_names: Dict[int, str], path: str,
               min_score: float = GRID_MIN_SCORE) -> List[dict]:
    """Draw one RGB image with its masks labelled ``class mask_score``.

    Args:
        img (np.ndarray): ``(H, W, 3)`` uint8 RGB image.
        detections (Sequence[dict]): As :func:`instances_to_detections`.
        class_names (dict): Class name of each category id.
        path (str): The PNG to write.
        min_score (float): Detections below this mask score are left out.
            Defaults to :data:`GRID_MIN_SCORE`.

    Returns:
        list[dict]: The detections drawn, best mask score first.
    """
    shown = best_detections(detections, min_score)
    height, width = img.shape[:2]
    fig, ax = plt.subplots(figsize=(width / DPI, height / DPI))
    fig.subplots_adjust(0, 0, 1, 1)
    _draw(ax, img, shown, class_names)
    _save(fig, path)
    return shown
