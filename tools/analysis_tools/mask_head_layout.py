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
import argparse
import json

import torch

from ms_rcnn_mm.analysis.layout import build_mask_heads, measure_layouts

#: the demo's positive RoIs per training step: 8 images, a quarter of 128
DEFAULT_ROIS = 256


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', help='an MS R-CNN config')
    parser.add_argument('--rois', type=int, default=DEFAULT_ROIS)
    parser.add_argument('--repeats', type=int, default=7)
    parser.add_argument('--threads', type=int,
                        help="torch's CPU threads (default: torch's)")
    parser.add_argument('--out', help='also write the results as JSON')
    args = parser.parse_args(argv)
    if min(args.rois, args.repeats) < 1:
        parser.error('--rois and --repeats must be >= 1')
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    result = measure_layouts(build_mask_heads(args.config), args.rois,
                             args.repeats)
    result.update(rois=args.rois, threads=torch.get_num_threads())
    print(f"mask head, {args.rois} RoIs, forward + backward "
          f"({result['threads']} threads): contiguous "
          f"{result['contiguous_ms']:.1f} ms, channels-last "
          f"{result['channels_last_ms']:.1f} ms: {result['ratio']:.3f}x "
          f"(paired {result['paired_ratio']:.3f}x); logits differ by "
          f"{result['max_abs_diff']:.1e} at most")
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == '__main__':
    main()
