"""Time a config's mask head contiguous against channels-last (CPU).

mmdet's ``FCNMaskHead`` and ``ms_rcnn_mm.ChannelsLastFCNMaskHead`` (what
the demo configs use) get the same weights and ``--rois`` RoI
features of the config's sizes; one training step each (forward and
backward), in alternation, after one warm-up of each; medians of
``--repeats``. It prints both times, their ratio and how far apart the two
layouts' logits are.

Example::

    python tools/analysis_tools/mask_head_layout.py \\
        configs/demo/ms-rcnn_r18-w32_fpn_synthetic.py --rois 256
"""
from ms_rcnn_mm.analysis.cli import (head_timing_parser, parse_positive,
                                     run_timing)
from ms_rcnn_mm.analysis.layout import build_mask_heads, measure_layouts

#: the demo's positive RoIs per training step: 8 images, a quarter of 128
DEFAULT_ROIS = 256


def parse_args(argv=None):
    parser = head_timing_parser(__doc__.splitlines()[0], DEFAULT_ROIS, 7)
    return parse_positive(parser, ('rois', 'repeats'), argv)


def report(result: dict) -> str:
    return (f"mask head, {result['rois']} RoIs, forward + backward "
            f"({result['threads']} threads): contiguous "
            f"{result['contiguous_ms']:.1f} ms, channels-last "
            f"{result['channels_last_ms']:.1f} ms: {result['ratio']:.3f}x "
            f"(paired {result['paired_ratio']:.3f}x); logits differ by "
            f"{result['max_abs_diff']:.1e} at most")


def main(argv=None) -> dict:
    args = parse_args(argv)
    return run_timing(
        args, lambda: measure_layouts(build_mask_heads(args.config),
                                      args.rois, args.repeats), report)


if __name__ == '__main__':
    main()
