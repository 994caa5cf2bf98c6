"""Time ``ms_rcnn_mm.MaskIoUQualityMetric`` beside mmdet's ``CocoMetric``
(segm) on a generated COCO-sized split.

The split: ``--num-images`` images of 640x480 with ``--gts`` polygon
instances of 80 categories each (COCO's val2017 has 5,000 images, 7.3
instances per image) and ``--dets`` detections per image (jittered copies
of the ground truth and false positives). Both metrics get the same
predictions, image by image through ``process``, then ``compute_metrics``;
each phase is timed apart, and the ratios printed. ``MaskIoUQualityMetric``
encodes the masks in its ``process``; ``CocoMetric`` is given them encoded
(RLEs, outside its timer), so the ``compute`` ratio is the one to read.

Usage::

    python tools/analysis_tools/benchmark_mask_quality_metric.py \\
        [--num-images 5000] [--dets 100] [--gts 7] [--json OUT.json]
"""
import argparse
import contextlib
import ctypes
import ctypes.util
import io
import json
import os.path as osp
import tempfile
import time

import cv2
import numpy as np
import torch
from mmdet.evaluation import CocoMetric
from mmdet.structures.mask import encode_mask_results

from ms_rcnn_mm.evaluation import MaskIoUQualityMetric

WIDTH, HEIGHT = 640, 480
NUM_CLASSES = 80
#: jittered copies of each ground-truth instance among the detections
COPIES = 5
#: vertices of each generated polygon
VERTICES = 16
#: glibc's mallopt parameter of the size above which blocks are mmapped
M_MMAP_THRESHOLD = -3


def fix_mmap_threshold(size: int = 128 * 1024) -> None:
    """Keep glibc from raising its mmap threshold to the size of the freed
    dense masks: each image's ``(dets, 480, 640)`` array would then come
    from the heap, between the small objects the metrics keep, and the heap
    could not shrink (docs/benchmarks.md has the measured memory)."""
    libc = ctypes.util.find_library('c')
    if libc:
        ctypes.CDLL(libc).mallopt(M_MMAP_THRESHOLD, size)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--num-images', type=int, default=5000)
    parser.add_argument('--dets', type=int, default=100)
    parser.add_argument('--gts', type=int, default=7)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--json', help='also write the timings here')
    return parser.parse_args(argv)


def polygon(rng: np.random.Generator, cx: float, cy: float, rx: float,
            ry: float) -> np.ndarray:
    """A wobbly ellipse, ``(VERTICES, 2)`` inside the image."""
    angles = np.linspace(0, 2 * np.pi, VERTICES, endpoint=False)
    radius = rng.uniform(0.8, 1.2, VERTICES)
    points = np.stack([cx + rx * radius * np.cos(angles),
                       cy + ry * radius * np.sin(angles)], 1)
    return np.clip(points, 0, [WIDTH - 1, HEIGHT - 1])


def random_shape(rng: np.random.Generator) -> tuple:
    rx, ry = rng.uniform(8, 120, 2)
    cx, cy = rng.uniform(0, WIDTH), rng.uniform(0, HEIGHT)
    return cx, cy, rx, ry


def write_split(path: str, rng: np.random.Generator, num_images: int,
                gts: int) -> list:
    """The COCO annotation file; returns each image's shapes and labels."""
    images, anns, shapes = [], [], []
    for image_id in range(1, num_images + 1):
        images.append(dict(id=image_id, file_name=f'{image_id}.jpg',
                           width=WIDTH, height=HEIGHT))
        image = []
        for _ in range(gts):
            shape, label = random_shape(rng), int(rng.integers(NUM_CLASSES))
            points = polygon(rng, *shape)
            x0, y0 = points.min(0)
            x1, y1 = points.max(0)
            anns.append(dict(
                id=len(anns) + 1, image_id=image_id, category_id=label + 1,
                segmentation=[points.flatten().round(1).tolist()],
                area=float(cv2.contourArea(points.astype(np.float32))),
                bbox=[float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
                iscrowd=0))
            image.append((shape, label))
        shapes.append(image)
    categories = [dict(id=k + 1, name=f'class{k}') for k in range(NUM_CLASSES)]
    with open(path, 'w') as f:
        json.dump(dict(images=images, annotations=anns,
                       categories=categories), f)
    return shapes


def predictions(rng: np.random.Generator, image_id: int, image: list,
                dets: int) -> dict:
    """One image's data sample: masks, boxes, labels and scores."""
    shapes = []
    for (cx, cy, rx, ry), label in image:
        for _ in range(COPIES):
            jitter = rng.normal(1, 0.15, 4)
            shapes.append(((cx + rx * (jitter[0] - 1), cy + ry *
                            (jitter[1] - 1), rx * jitter[2], ry * jitter[3]),
                           label))
    while len(shapes) < dets:
        shapes.append((random_shape(rng), int(rng.integers(NUM_CLASSES))))
    masks = np.zeros((dets, HEIGHT, WIDTH), np.uint8)
    boxes = np.zeros((dets, 4), np.float32)
    for k, (shape, _) in enumerate(shapes[:dets]):
        points = polygon(rng, *shape)
        cv2.fillPoly(masks[k], [points.round().astype(np.int32)], 1)
        boxes[k] = [*points.min(0), *points.max(0)]
    scores = torch.from_numpy(rng.uniform(0.05, 1, dets)).float()
    ious = torch.from_numpy(rng.uniform(0, 1, dets)).float()
    pred = dict(
        bboxes=torch.from_numpy(boxes),
        labels=torch.tensor([label for _, label in shapes[:dets]]),
        masks=torch.from_numpy(masks).bool(), scores=scores,
        mask_ious=ious, maskness=torch.from_numpy(
            rng.uniform(0, 1, dets)).float())
    return dict(img_id=image_id, ori_shape=(HEIGHT, WIDTH),
                pred_instances=pred)


def timed(fn, *args) -> float:
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        fn(*args)
    return time.perf_counter() - start


def main(argv=None) -> dict:
    args = parse_args(argv)
    fix_mmap_threshold()
    rng = np.random.default_rng(args.seed)
    classes = tuple(f'class{k}' for k in range(NUM_CLASSES))
    with tempfile.TemporaryDirectory() as tmp:
        ann_file = osp.join(tmp, 'val.json')
        shapes = write_split(ann_file, rng, args.num_images, args.gts)
        ours = MaskIoUQualityMetric(ann_file)
        theirs = CocoMetric(ann_file, metric='segm')
        for metric in (ours, theirs):
            metric.dataset_meta = dict(classes=classes)
        process = dict(ours=0.0, coco=0.0)
        for image_id, image in enumerate(shapes, 1):
            sample = predictions(rng, image_id, image, args.dets)
            pred = sample['pred_instances']
            pred['mask_scores'] = pred['scores'] * pred['mask_ious']
            process['ours'] += timed(ours.process, {}, [sample])
            # CocoMetric gets the masks as RLEs (encoded outside its timer:
            # the evaluations are what is compared), and no mask_scores, as
            # from a plain Mask R-CNN (it would rank masks by them)
            plain = dict(sample, pred_instances=dict(
                pred, masks=encode_mask_results(pred['masks'].numpy())))
            del plain['pred_instances']['mask_scores']
            process['coco'] += timed(theirs.process, {}, [plain])
        compute = dict(ours=timed(ours.compute_metrics, ours.results),
                       coco=timed(theirs.compute_metrics, theirs.results))
    total = {k: process[k] + compute[k] for k in process}
    timings = dict(
        num_images=args.num_images, dets=args.dets, gts=args.gts,
        process_s=process, compute_s=compute, total_s=total,
        compute_ratio=compute['ours'] / compute['coco'],
        total_ratio=total['ours'] / total['coco'])
    print(f"{args.num_images} images x {args.dets} detections, {args.gts} "
          'GT each')
    for name, label in (('ours', 'MaskIoUQualityMetric (3 rankings)'),
                        ('coco', 'CocoMetric segm')):
        print(f'{label:36s} process {process[name]:8.1f} s  compute '
              f'{compute[name]:8.1f} s  total {total[name]:8.1f} s')
    print(f"ratio ours / CocoMetric: compute {timings['compute_ratio']:.2f}x"
          f", total {timings['total_ratio']:.2f}x")
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(timings, f, indent=2)
    return timings


if __name__ == '__main__':
    main()
