"""Time the MaskIoU targets of ms_rcnn_mm against mmdet 3.3.0's.

COCO-sized case by default: 2 images of 800x1216, 20 ground-truth instances
per image (ellipses whose sides are log-uniform between 12 and 500 pixels)
and 128 positive proposals per image, jittered around their instance's box.
Both implementations get the same inputs; mmdet runs with
``mask_thr_binary=0.0`` (its logit threshold), ours with 0.5 (a probability),
which is the same binarisation, so the targets must agree. Two regimes are
timed: warm (the inputs stay in the CPU's caches between calls) and cold (a
64 MB buffer is read before every call, so the masks come from main memory,
as when the data pipeline produced them long before).

Our bitmap masks go through the compiled kernel
(``ms_rcnn_mm/models/csrc/box_areas.c``) wherever the proposals are;
``--no-kernel`` sets ``MS_RCNN_MM_NO_KERNEL=1`` and times the portable path
that a machine without a C compiler gets. With ``--device cuda`` the
proposals, logits and mask targets are on the GPU (the masks stay on the
host, as ``BitmapMasks`` are), and the run also counts the synchronising
CUDA calls of each implementation. The measured figures are in
``docs/training.md``.

Example::

    python tools/analysis_tools/benchmark_mask_iou_targets.py
    python tools/analysis_tools/benchmark_mask_iou_targets.py --no-kernel
    python tools/analysis_tools/benchmark_mask_iou_targets.py --device cuda \\
        --out targets_cuda.json
"""
import argparse
import json
import os
import statistics
import time
from types import SimpleNamespace

import cv2
import numpy as np
import torch
from mmdet.models.roi_heads.mask_heads import MaskIoUHead as MMDetMaskIoUHead
from mmdet.structures.mask import BitmapMasks
from mmengine.config import ConfigDict
from mmengine.structures import InstanceData

from ms_rcnn_mm.analysis.speed import cuda_synchronisations
from ms_rcnn_mm.models import MaskIoUHead, area_ratio

MASK_SIZE = 28


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--images', type=int, default=2)
    parser.add_argument('--height', type=int, default=800)
    parser.add_argument('--width', type=int, default=1216)
    parser.add_argument('--instances', type=int, default=20)
    parser.add_argument('--positives', type=int, default=128)
    parser.add_argument('--repeats', type=int, default=50)
    parser.add_argument('--device', default='cpu',
                        help='device of the proposals: cpu, cuda or cuda:N')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument(
        '--no-kernel',
        action='store_true',
        help='time the portable path (MS_RCNN_MM_NO_KERNEL=1) instead of '
        'the compiled kernel')
    parser.add_argument('--out', help='write the results to this JSON file')
    args = parser.parse_args()
    if args.device.startswith('cuda') and not torch.cuda.is_available():
        parser.error(f'--device {args.device}: torch {torch.__version__} '
                     'sees no CUDA device')
    return args


def make_image(rng, args, device):
    masks = np.zeros((args.instances, args.height, args.width), np.uint8)
    boxes = []
    for mask in masks:
        w, h = np.exp(rng.uniform(np.log(12), np.log(500), 2))
        cx = rng.uniform(w / 2, args.width - w / 2)
        cy = rng.uniform(h / 2, args.height - h / 2)
        cv2.ellipse(mask, (int(cx), int(cy)), (int(w / 2), int(h / 2)),
                    rng.uniform(0, 180), 0, 360, 1, -1)
        ys, xs = np.nonzero(mask)
        boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    boxes = np.asarray(boxes, np.float64)
    inds = rng.integers(0, args.instances, args.positives)
    size = boxes[inds, 2:] - boxes[inds, :2]
    jitter = rng.normal(0, 0.1, (args.positives, 4)) * np.tile(size, 2)
    proposals = np.round(boxes[inds] + jitter)  # integer-aligned proposals
    proposals[:, 2:] = np.maximum(proposals[:, 2:], proposals[:, :2] + 1)
    sample = SimpleNamespace(
        pos_priors=torch.tensor(proposals, dtype=torch.float32,
                                device=device),
        pos_assigned_gt_inds=torch.tensor(inds, device=device))
    return sample, InstanceData(
        masks=BitmapMasks(masks, args.height, args.width))


def sync(device):
    if device.startswith('cuda'):
        torch.cuda.synchronize()


#: bytes read before each timed call in the cold runs: more than the L3
#: cache, so each call starts with the masks in main memory
FLUSH_BYTES = 64 * 1024 * 1024


def interleaved_medians_ms(fns, repeats, device, cold=False):
    """Median time of each function, run in turn (A B A B ...) so that the
    machine's drift affects them alike. ``cold`` reads :data:`FLUSH_BYTES`
    before every call (untimed), evicting the inputs from the caches."""
    flush = np.ones(FLUSH_BYTES // 8)
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, record in zip(fns, times):
            if cold:
                flush.sum()
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            record.append((time.perf_counter() - start) * 1e3)
    return [statistics.median(t) for t in times]


def main():
    args = parse_args()
    if args.no_kernel:
        os.environ[area_ratio.NO_KERNEL_ENV] = '1'
    rng = np.random.default_rng(args.seed)
    samples, gts = zip(*(make_image(rng, args, args.device)
                         for _ in range(args.images)))
    num = args.images * args.positives
    logits = torch.randn(num, MASK_SIZE, MASK_SIZE, device=args.device) * 3
    targets = (torch.rand(num, MASK_SIZE, MASK_SIZE, device=args.device) <
               0.5).float()
    ours, theirs = MaskIoUHead(), MMDetMaskIoUHead()

    def run_ours():
        return ours.get_targets(samples, gts, logits, targets,
                                ConfigDict(mask_thr_binary=0.5))

    def run_theirs():
        return theirs.get_targets(samples, gts, logits, targets,
                                  ConfigDict(mask_thr_binary=0.0))

    diff = (run_ours() - run_theirs()).abs().max().item()
    interleaved_medians_ms((run_ours, run_theirs), 3, args.device)  # warm-up
    host_path = ('compiled kernel' if area_ratio.kernel_enabled() else
                 'portable')
    print(f'inputs: {args.images} images {args.height}x{args.width}, '
          f'{args.instances} instances and {args.positives} positives each, '
          f'proposals on {args.device}, torch {torch.__version__}, '
          f'{torch.get_num_threads()} threads; medians of {args.repeats} '
          'interleaved calls')
    print(f'ms_rcnn_mm host path: {host_path}')
    print(f'{"caches":8s} {"mmdet 3.3.0":>12s} {"ms_rcnn_mm":>12s} '
          f'{"speed-up":>9s}')
    result = dict(vars(args), host_path=host_path, torch=torch.__version__,
                  threads=torch.get_num_threads())
    for cold in (False, True):
        t_ours, t_theirs = interleaved_medians_ms(
            (run_ours, run_theirs), args.repeats, args.device, cold=cold)
        regime = 'cold' if cold else 'warm'
        print(f'{regime:8s} {t_theirs:9.2f} ms {t_ours:9.2f} ms '
              f'{t_theirs / t_ours:8.1f}x')
        result[regime] = dict(mmdet_ms=t_theirs, ours_ms=t_ours,
                              speedup=t_theirs / t_ours)
    print(f'max |ours - mmdet| = {diff:.2e}')
    result['max_abs_diff'] = diff
    if args.device.startswith('cuda'):
        result['synchronisations'] = dict(
            ours=cuda_synchronisations(run_ours)[1],
            mmdet=cuda_synchronisations(run_theirs)[1])
        print('synchronising CUDA calls per batch: ours {ours}, mmdet '
              '{mmdet}'.format(**result['synchronisations']))
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(result, f, indent=2)


if __name__ == '__main__':
    main()
