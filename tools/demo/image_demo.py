"""Run an MS R-CNN config and checkpoint on one image and draw its masks,
each labelled ``class mask_score`` (mask score = cls score x MaskIoU).

Usage::

    python tools/demo/image_demo.py IMAGE CONFIG CHECKPOINT \\
        [--out-file result.png] [--json result.json] [--device cpu] \\
        [--min-score 0.3]

``--json`` also writes every detection (box, class, cls score, predicted
MaskIoU, mask score; masks as COCO RLE).
"""
import argparse
import json

import mmcv
from mmdet.apis import inference_detector, init_detector

import ms_rcnn_mm  # noqa: F401  (registers the package's modules)
from ms_rcnn_mm.visualization import (GRID_MIN_SCORE, draw_image,
                                      instances_to_detections)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('img', help='image file')
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--out-file', default='result.png',
                        help='the drawn image (PNG)')
    parser.add_argument('--json', help='also write the detections here')
    parser.add_argument('--device', default='cpu', help='e.g. cuda:0')
    parser.add_argument('--min-score', type=float, default=GRID_MIN_SCORE,
                        help='mask score below which masks are not drawn')
    return parser.parse_args()


def main():
    args = parse_args()
    model = init_detector(args.config, args.checkpoint, device=args.device)
    img = mmcv.imread(args.img)  # BGR, as the test pipeline expects
    result = inference_detector(model, img)
    detections = instances_to_detections(result.pred_instances)
    names = dict(enumerate(model.dataset_meta['classes']))
    shown = draw_image(mmcv.bgr2rgb(img), detections, names, args.out_file,
                       args.min_score)
    print(f'{len(detections)} detections, {len(shown)} with a mask score '
          f'>= {args.min_score} drawn to {args.out_file}')
    if args.json:
        for det in detections:
            det['segmentation']['counts'] = det['segmentation'][
                'counts'].decode()
        with open(args.json, 'w') as f:
            json.dump(detections, f)


if __name__ == '__main__':
    main()
