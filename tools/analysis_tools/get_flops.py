"""Count the multiply-adds of an MS R-CNN config, the MaskIoU head apart.

Runs the model once in ``predict`` mode on synthetic images of the given
size (no dataset, random weights: no download), with exactly
``--num-dets`` detections per image, as at test time, and counts
multiply-adds (MACs) per component with forward hooks
(:mod:`ms_rcnn_mm.analysis.complexity`: convolutions, deformable
convolutions, transposed convolutions and linear layers). Prints a table;
``--out`` writes it as JSON.

mmdet's own ``tools/analysis_tools/get_flops.py`` needs the config's dataset
and traces the ``tensor``-mode forward with ``torch.jit``, which runs the
RoI heads on the first RPN proposals instead of the detections: it cannot
say what the MaskIoU head costs at test time.

Example::

    python tools/analysis_tools/get_flops.py \\
        configs/ms-rcnn/ms-rcnn-mm_r50_fpn_1x_coco.py --shape 800 1216
"""
import argparse
import json

import torch
from mmengine.config import DictAction

import ms_rcnn_mm  # noqa: F401  (registers the package's modules)
from ms_rcnn_mm.analysis.complexity import count_predict, flops_report
from ms_rcnn_mm.analysis.models import (NUM_DETECTIONS, OURS, build_variants,
                                        force_detections, load_config,
                                        synthetic_batch)

DEFAULT_SHAPE = (800, 1216)  # a COCO image resized to 800 on its short side


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog='\n'.join(__doc__.splitlines()[2:]))
    parser.add_argument('config', help='MS R-CNN config file')
    parser.add_argument('--shape', type=int, nargs=2, default=DEFAULT_SHAPE,
                        metavar=('HEIGHT', 'WIDTH'),
                        help='input size (default: %(default)s)')
    parser.add_argument('--batch', type=int, default=1,
                        help='images per forward (default: %(default)s)')
    parser.add_argument('--num-dets', type=int, default=NUM_DETECTIONS,
                        help='detections per image that reach the mask and '
                        'MaskIoU heads (default: %(default)s)')
    parser.add_argument('--out', help='write the report to this JSON file')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value')
    return parser.parse_args(argv)


def format_report(report: dict) -> str:
    lines = [f"{'component':<28} {'GMACs/image':>12} {'rows/image':>11} "
             f"{'GMACs/row':>10}"]
    for name, row in report['components'].items():
        lines.append(f"{name:<28} {row['gmacs_per_image']:>12.2f} "
                     f"{row['rows_per_image']:>11.0f} "
                     f"{row['gmacs_per_row']:>10.3f}")
    head = report['head']
    lines += [
        f"{'total':<28} {report['total_gmacs_per_image']:>12.2f}",
        f"MaskIoU head: {head['gmacs_per_roi']:.3f} GMACs per RoI x "
        f"{head['rois_per_image']:.0f} RoIs = {head['gmacs_per_image']:.2f} "
        f"GMACs per image, {100 * head['share']:.1f}% of the rest of the "
        'model (its Mask R-CNN)'
    ]
    return '\n'.join(lines)


def main(argv=None) -> dict:
    args = parse_args(argv)
    cfg = load_config(args.config, args.cfg_options)
    model = build_variants(force_detections(cfg.model, args.num_dets),
                           variants=(OURS, ))[OURS]
    height, width = args.shape
    data = model.data_preprocessor(
        synthetic_batch(args.batch, height, width), training=False)
    counter = count_predict(model, data)
    report = flops_report(counter, args.batch)
    report.update(
        config=args.config, input=[args.batch, 3, height, width],
        num_dets=args.num_dets,
        params=sum(p.numel() for p in model.parameters()),
        mask_iou_head_params=sum(
            p.numel() for p in model.roi_head.mask_iou_head.parameters()))
    print(f'{args.config}: {args.batch} image(s) of {height}x{width}, '
          f'{sum(p.numel() for p in model.parameters()) / 1e6:.1f} M params')
    print(format_report(report))
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(report, f, indent=2)
    return report


if __name__ == '__main__':
    with torch.no_grad():
        main()
