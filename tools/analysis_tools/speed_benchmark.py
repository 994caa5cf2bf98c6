"""Time MS R-CNN against its Mask R-CNN baseline and mmdet's MS R-CNN.

For each config, builds three detectors that share weights and inputs
(:mod:`ms_rcnn_mm.analysis.models`): ``mask_rcnn`` (the config without the
MaskIoU head: mmdet's MaskRCNN with the same backbone, heads, input and
batch), ``ms_rcnn_mm`` (this package) and ``mmdet_ms_rcnn`` (MMDetection
3.3.0's built-in MS R-CNN). It runs them interleaved (A B C A B C ...):
``--warmup`` rounds, then ``--repeats`` measured rounds of one training
step (forward + backward) and one inference (exactly ``--num-dets``
detections per image) of each, and prints the median times, the peak
memory a step adds (:mod:`ms_rcnn_mm.analysis.speed`) and each MS R-CNN's
ratio to Mask R-CNN: of the medians, and paired (the median of the
per-round ratios, steadier where the machine's speed drifts). Beside the
measured overhead it prints the arithmetic one: the MaskIoU head's
multiply-adds over the rest of the model's, counted on the same inputs. Random
weights, synthetic images: no download, no dataset.

Examples::

    # CPU, 2 images of 512x512
    python tools/analysis_tools/speed_benchmark.py \\
        configs/ms-rcnn/ms-rcnn-mm_r50_fpn_1x_coco.py \\
        configs/ms-rcnn/ms-rcnn-mm_r101_fpn_1x_coco.py \\
        --shape 512 512 --batch 2 --repeats 5 --out speed_cpu.json
    # GPU, 2 images of 1333x800, with and without float16 autocast
    python tools/analysis_tools/speed_benchmark.py CONFIGS... \\
        --device cuda --shape 800 1333 --batch 2 [--amp]
"""
import argparse
import copy
import json
import os
import platform

import torch
from mmengine.config import DictAction

import ms_rcnn_mm  # noqa: F401  (registers the package's modules)
from ms_rcnn_mm.analysis.models import (NUM_DETECTIONS, OURS, build_variants,
                                        force_detections, load_config,
                                        synthetic_batch)
from ms_rcnn_mm.analysis.speed import (ORDER, SUMMARY_HEADER, benchmark,
                                       count_macs, release_freed_memory_to_os,
                                       summary_rows)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog='\n'.join(__doc__.splitlines()[2:]))
    parser.add_argument('configs', nargs='+', help='MS R-CNN config files')
    parser.add_argument('--shape', type=int, nargs=2, default=(512, 512),
                        metavar=('HEIGHT', 'WIDTH'),
                        help='input size (default: %(default)s)')
    parser.add_argument('--batch', type=int, default=2,
                        help='images per step (default: %(default)s)')
    parser.add_argument('--repeats', type=int, default=5,
                        help='measured rounds (default: %(default)s)')
    parser.add_argument('--warmup', type=int, default=1,
                        help='unmeasured rounds first (default: %(default)s)')
    parser.add_argument('--device', default='cpu',
                        help='cpu, cuda or cuda:N (default: %(default)s)')
    parser.add_argument('--amp', action='store_true',
                        help='float16 autocast (CUDA only)')
    parser.add_argument('--num-dets', type=int, default=NUM_DETECTIONS,
                        help='detections per image at inference '
                        '(default: %(default)s)')
    parser.add_argument('--threads', type=int,
                        help='CPU threads of torch (default: torch\'s, the '
                        'number of cores); 1 is steadier on a busy machine')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--out', help='write the results to this JSON file')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override settings of every config, key=value')
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == 'cuda' and not torch.cuda.is_available():
        parser.error(f'--device {args.device}: torch {torch.__version__} '
                     'sees no CUDA device')
    if args.amp and device.type != 'cuda':
        parser.error('--amp needs --device cuda (float16 autocast)')
    if args.repeats < 1 or args.warmup < 0 or args.batch < 1 or (
            args.threads is not None and args.threads < 1):
        parser.error('--repeats, --batch and --threads must be >= 1, '
                     '--warmup >= 0')
    return args


def cpu_model() -> str:
    """The CPU's model name (Linux), else what ``platform`` knows."""
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(device: torch.device) -> dict:
    info = dict(torch=torch.__version__, threads=torch.get_num_threads(),
                cpu=cpu_model(), cpu_count=os.cpu_count())
    if device.type == 'cuda':
        info['gpu'] = torch.cuda.get_device_name(device)
    return info


def run_config(path: str, args) -> dict:
    cfg = load_config(path, args.cfg_options)
    device = torch.device(args.device)
    models = build_variants(force_detections(cfg.model, args.num_dets),
                            seed=args.seed)
    models = {name: models[name].to(device) for name in ORDER
              if name in models}
    batch = synthetic_batch(args.batch, *args.shape, seed=args.seed)
    preprocessor = models[OURS].data_preprocessor
    data = dict(
        train=preprocessor(copy.deepcopy(batch), training=True),
        infer=preprocessor(copy.deepcopy(batch), training=False))
    macs = count_macs(models, data, device)
    result = benchmark(models, data, device, args.repeats, args.warmup,
                       args.amp)
    result.update(config=path, macs=macs)
    return result


def report(result: dict, args) -> str:
    rows = [list(SUMMARY_HEADER)] + summary_rows(result)
    widths = [max(len(row[i]) for row in rows)
              for i in range(len(SUMMARY_HEADER))]
    lines = [f"{result['config']}: {args.batch} x {args.shape[0]}x"
             f"{args.shape[1]}, {args.device}{' amp' if args.amp else ''}, "
             f'median of {args.repeats} (after {args.warmup} warm-up)']
    lines += ['  '.join(c.rjust(w) for c, w in zip(row, widths))
              for row in rows]
    for mode in ('infer', 'train'):
        ours = result['macs'][mode][OURS]
        rois = {n: v['rois'] for n, v in result['macs'][mode].items()}
        lines.append(
            f'{mode}: MaskIoU head {ours["mask_iou_gmacs"]:.1f} of '
            f'{ours["gmacs"]:.1f} GMACs (forward) = +'
            f'{100 * ours["mask_iou_share"]:.1f}% over Mask R-CNN '
            f'(arithmetic); RoIs of the mask/MaskIoU heads {rois}')
    return '\n'.join(lines)


def main(argv=None) -> list:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    release_freed_memory_to_os()
    device = torch.device(args.device)
    load_before = os.getloadavg()
    results = []
    for path in args.configs:
        result = run_config(path, args)
        result.update(
            shape=list(args.shape), batch=args.batch, device=args.device,
            amp=args.amp, repeats=args.repeats, warmup=args.warmup,
            num_dets=args.num_dets)
        print(report(result, args), flush=True)
        results.append(result)
    info = dict(machine=machine(device), load_average_before=load_before,
                load_average_after=os.getloadavg(), results=results)
    print(f"load average (1, 5, 15 min) before {load_before}, after "
          f"{info['load_average_after']}")
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(info, f, indent=2)
    return results


if __name__ == '__main__':
    main()
