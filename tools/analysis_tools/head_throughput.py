"""Time the MaskIoU head of a config against a square matrix product (CPU).

The MaskIoU head's forward on ``--rois`` RoIs (default: 2 images of 100
detections, the speed benchmark's inference) and a float32 product of two
``--gemm-size`` square matrices run in alternation, after one warm-up of
each; medians of ``--repeats``. The product's rate says how many
multiply-adds per second the machine sustains; at that rate the head cannot
take less than ``head_ms_at_gemm_rate`` without fewer multiply-adds, which
bounds the inference overhead of MS R-CNN over Mask R-CNN from below.

Example::

    python tools/analysis_tools/head_throughput.py \\
        configs/ms-rcnn/ms-rcnn-mm_r50_fpn_1x_coco.py
"""
import argparse
import json

import torch

from ms_rcnn_mm.analysis.throughput import (GEMM_SIZE, build_head, head_inputs,
                                            measure)

#: the speed benchmark's inference: 2 images, 100 detections each
DEFAULT_ROIS = 200


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', help='an MS R-CNN config')
    parser.add_argument('--rois', type=int, default=DEFAULT_ROIS)
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--gemm-size', type=int, default=GEMM_SIZE)
    parser.add_argument('--threads', type=int,
                        help="torch's CPU threads (default: torch's)")
    parser.add_argument('--out', help='also write the results as JSON')
    args = parser.parse_args(argv)
    if min(args.rois, args.repeats, args.gemm_size) < 1:
        parser.error('--rois, --repeats and --gemm-size must be >= 1')
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    head = build_head(args.config)
    result = measure(head, head_inputs(head, args.rois), args.repeats,
                     args.gemm_size)
    result.update(rois=args.rois, threads=torch.get_num_threads())
    print(f"MaskIoU head, {args.rois} RoIs: {result['head_ms']:.1f} ms, "
          f"{result['head_gmacs']:.2f} GMACs, "
          f"{result['head_gmac_per_s']:.1f} GMAC/s\n"
          f"GEMM {args.gemm_size}^3: {result['gemm_ms']:.1f} ms, "
          f"{result['gemm_gmac_per_s']:.1f} GMAC/s\n"
          f"head rate / GEMM rate: {result['head_vs_gemm']:.2f}; "
          f"the head at the GEMM rate: "
          f"{result['head_ms_at_gemm_rate']:.1f} ms "
          f"({result['threads']} threads)")
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == '__main__':
    main()
