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
from ms_rcnn_mm.analysis.cli import (head_timing_parser, parse_positive,
                                     run_timing)
from ms_rcnn_mm.analysis.throughput import (GEMM_SIZE, build_head, head_inputs,
                                            measure)

#: the speed benchmark's inference: 2 images, 100 detections each
DEFAULT_ROIS = 200


def parse_args(argv=None):
    parser = head_timing_parser(__doc__.splitlines()[0], DEFAULT_ROIS, 5)
    parser.add_argument('--gemm-size', type=int, default=GEMM_SIZE)
    return parse_positive(parser, ('rois', 'repeats', 'gemm_size'), argv)


def report(result: dict) -> str:
    return (f"MaskIoU head, {result['rois']} RoIs: {result['head_ms']:.1f} "
            f"ms, {result['head_gmacs']:.2f} GMACs, "
            f"{result['head_gmac_per_s']:.1f} GMAC/s\n"
            f"GEMM {result['gemm_size']}^3: {result['gemm_ms']:.1f} ms, "
            f"{result['gemm_gmac_per_s']:.1f} GMAC/s\n"
            f"head rate / GEMM rate: {result['head_vs_gemm']:.2f}; "
            f"the head at the GEMM rate: "
            f"{result['head_ms_at_gemm_rate']:.1f} ms "
            f"({result['threads']} threads)")


def main(argv=None) -> dict:
    args = parse_args(argv)

    def run() -> dict:
        head = build_head(args.config)
        return dict(measure(head, head_inputs(head, args.rois),
                            args.repeats, args.gemm_size),
                    gemm_size=args.gemm_size)

    return run_timing(args, run, report)


if __name__ == '__main__':
    main()
