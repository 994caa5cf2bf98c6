"""``make demo``: train and evaluate a small MS R-CNN on the CPU.

1. generates the synthetic shapes dataset (cached);
2. trains ``configs/demo/ms-rcnn_r18-w32_fpn_synthetic.py`` from scratch
   with mmdet's ``tools/train.py`` (through :mod:`ms_rcnn_mm.launch`);
3. evaluates the last checkpoint once, with mmdet's ``CocoMetric`` and
   :class:`~ms_rcnn_mm.evaluation.MaskIoUQualityMetric`;
4. writes ``summary.json``, ``summary.md`` and the figures of
   :mod:`ms_rcnn_mm.visualization` (:data:`FIGURES`) to the work dir.

Usage::

    python -m ms_rcnn_mm.demo [--work-dir work_dirs/demo] [--iters N]
        [--seed N] [--cfg-options KEY=VALUE ...]
    # the same pipeline on a COCO dataset already on disk (no generation)
    python -m ms_rcnn_mm.demo --no-generate --data-root ROOT --config CFG
    # evaluate a trained checkpoint only (e.g. with other test options)
    python -m ms_rcnn_mm.demo --checkpoint CKPT [--cfg-options ...]
"""
import argparse
import json
import os.path as osp
import subprocess
import sys
import time
from pathlib import Path

from mmengine.config import Config, DictAction
from mmengine.runner import Runner

from . import visualization
from .datasets import generate
from .evaluation import MaskIoUQualityMetric

#: warm-up of the demo config, shortened for shorter runs
WARMUP_ITERS = 50
#: seed of training (RoI sampling, data order, initialisation) by default
DEFAULT_SEED = 0
#: where the synthetic data is generated (relative to the working folder)
DATA_ROOT = 'data/synthetic'
REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / 'configs' / 'demo' / 'ms-rcnn_r18-w32_fpn_synthetic.py'
#: keys of summary.json taken from the metrics of the evaluation
SUMMARY_KEYS = {
    'bbox_mAP': 'coco/bbox_mAP',
    'segm_mAP': 'maskiou/segm_mAP',
    'segm_mAP_cls_score': 'maskiou/segm_mAP_cls_score',
    'segm_mAP_maskness': 'maskiou/segm_mAP_maskness',
    'segm_mAP_gain': 'maskiou/segm_mAP_gain',
    'maskiou_pearson': 'maskiou/pearson',
    'maskiou_spearman': 'maskiou/spearman',
    'maskiou_pearson_all': 'maskiou/pearson_all',
    'maskiou_spearman_all': 'maskiou/spearman_all',
    'cls_score_pearson': 'maskiou/cls_score_pearson',
    'cls_score_pearson_all': 'maskiou/cls_score_pearson_all',
    'maskness_pearson': 'maskiou/maskness_pearson',
    'maskness_pearson_all': 'maskiou/maskness_pearson_all',
    'maskiou_ece': 'maskiou/ece',
    'num_matched': 'maskiou/num_matched',
    'num_detections': 'maskiou/num_detections',
}
#: keys of summary.json from ``MaskIoUQualityMetric(boundary=True)``, as
#: the demo configs set it; left out for a config without it
BOUNDARY_KEYS = {
    'boundary_mAP': 'maskiou/boundary_mAP',
    'boundary_mAP_cls_score': 'maskiou/boundary_mAP_cls_score',
    'boundary_mAP_maskness': 'maskiou/boundary_mAP_maskness',
    'boundary_mAP_gain': 'maskiou/boundary_mAP_gain',
}
#: rows of summary.md: summary key, what it is
TABLE = (
    ('bbox_mAP', 'box AP (classification scores)'),
    ('segm_mAP', 'mask AP, ranked by cls x MaskIoU'),
    ('segm_mAP_cls_score', 'mask AP, ranked by cls alone'),
    ('segm_mAP_maskness', 'mask AP, ranked by cls x maskness'),
    ('segm_mAP_gain', 'gain of mask scoring over cls alone (AP)'),
    ('boundary_mAP', 'Boundary AP, ranked by cls x MaskIoU'),
    ('boundary_mAP_cls_score', 'Boundary AP, ranked by cls alone'),
    ('boundary_mAP_maskness', 'Boundary AP, ranked by cls x maskness'),
    ('boundary_mAP_gain', 'gain of mask scoring in Boundary AP'),
    ('maskiou_pearson', 'Pearson, predicted vs true MaskIoU (matched)'),
    ('maskiou_spearman', 'Spearman, predicted vs true MaskIoU (matched)'),
    ('cls_score_pearson', 'Pearson, cls score vs true MaskIoU (matched)'),
    ('maskness_pearson', 'Pearson, maskness vs true MaskIoU (matched)'),
    ('maskiou_ece', 'calibration error of the predicted MaskIoU (matched)'),
    ('maskiou_pearson_all', 'Pearson, predicted vs true MaskIoU (all)'),
    ('maskiou_spearman_all', 'Spearman, predicted vs true MaskIoU (all)'),
    ('cls_score_pearson_all', 'Pearson, cls score vs true MaskIoU (all)'),
    ('maskness_pearson_all', 'Pearson, maskness vs true MaskIoU (all)'),
    ('num_matched', 'detections matched to a GT (box IoU >= 0.5)'),
    ('num_detections', 'detections'),
    ('train_seconds', 'training wall time (s)'),
    ('eval_seconds', 'evaluation wall time (s)'),
    ('seed', 'training seed'),
)
#: the figures written to the work dir
FIGURES = ('maskiou_scatter.png', 'score_per_iou_bin.png',
           'reliability.png', 'val_detections.png')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--work-dir', default='work_dirs/demo')
    parser.add_argument('--data-root', default=DATA_ROOT)
    parser.add_argument('--config', default=str(CONFIG))
    parser.add_argument(
        '--iters', type=int, default=None,
        help="training iterations (default: the config's max_iters)")
    parser.add_argument(
        '--seed', type=int, default=DEFAULT_SEED,
        help=f'training seed (default {DEFAULT_SEED})')
    parser.add_argument(
        '--cfg-options', nargs='+', default=[], metavar='KEY=VALUE',
        help='config overrides for training and evaluation, as mmdet\'s '
        'tools/train.py --cfg-options')
    parser.add_argument(
        '--checkpoint',
        help='evaluate this checkpoint instead of training (the work dir '
        'gets the evaluation only)')
    parser.add_argument('--num-train', type=int, default=300)
    parser.add_argument('--num-val', type=int, default=100)
    parser.add_argument(
        '--no-generate', action='store_true',
        help='use the COCO dataset at --data-root (annotations/train.json '
        'and val.json) instead of generating the synthetic one')
    return parser.parse_args(argv)


def data_options(data_root: str) -> list:
    root = data_root.rstrip('/') + '/'
    ann = root + 'annotations/val.json'
    return [
        f'train_dataloader.dataset.data_root={root}',
        f'val_dataloader.dataset.data_root={root}',
        f'test_dataloader.dataset.data_root={root}',
        f'val_evaluator.0.ann_file={ann}', f'val_evaluator.1.ann_file={ann}',
        f'test_evaluator.0.ann_file={ann}', f'test_evaluator.1.ann_file={ann}'
    ]


def parse_options(options: list) -> dict:
    """``KEY=VALUE`` strings as mmengine's ``DictAction`` reads them."""
    parser = argparse.ArgumentParser()
    parser.add_argument('--options', nargs='+', action=DictAction)
    return vars(parser.parse_args(['--options', *options]))['options']


def train(args) -> float:
    """Train with mmdet's tools/train.py; returns the wall time.

    Validation during training is switched off (``val_begin`` past the last
    iteration): the demo evaluates the last checkpoint once, afterwards.
    """
    options = data_options(args.data_root) + args.cfg_options + [
        f'randomness.seed={args.seed}']
    max_iters = args.iters or Config.fromfile(
        args.config).train_cfg.max_iters
    options.append(f'train_cfg.val_begin={max_iters + 1}')
    if args.iters:
        warmup = max(1, min(WARMUP_ITERS, args.iters // 5))
        options += [f'train_cfg.max_iters={args.iters}',
                    f'train_cfg.val_interval={args.iters}',
                    f'param_scheduler.0.end={warmup}',
                    f'param_scheduler.1.begin={warmup}',
                    f'param_scheduler.1.end={args.iters}']
    command = [sys.executable, '-m', 'ms_rcnn_mm.launch', 'train',
               args.config, '--work-dir', args.work_dir,
               '--cfg-options'] + options
    print('[demo] training:', ' '.join(command), flush=True)
    start = time.perf_counter()
    subprocess.run(command, check=True)
    return time.perf_counter() - start


def evaluate(args) -> tuple:
    """Test the last checkpoint once.

    Returns:
        tuple: the metrics (dict), the :class:`MaskIoUQualityMetric` with
        its pairs and detections, the image file of each image id (dict),
        the wall time (s).
    """
    cfg = Config.fromfile(args.config)
    cfg.merge_from_dict(parse_options(data_options(args.data_root) +
                                      args.cfg_options))
    cfg.work_dir = args.work_dir
    cfg.test_evaluator[1]['keep_pairs'] = True
    cfg.load_from = args.checkpoint or Path(
        args.work_dir, 'last_checkpoint').read_text().strip()
    start = time.perf_counter()
    runner = Runner.from_cfg(cfg)
    metrics = runner.test()
    seconds = time.perf_counter() - start
    quality = next(m for m in runner.test_evaluator.metrics
                   if isinstance(m, MaskIoUQualityMetric))
    dataset = cfg.test_dataloader.dataset
    img_dir = osp.join(dataset.data_root, dataset.data_prefix['img'])
    image_paths = {image_id: osp.join(img_dir, info['file_name'])
                   for image_id, info in quality.coco.imgs.items()}
    return metrics, quality, image_paths, seconds


def draw_figures(quality: MaskIoUQualityMetric, image_paths: dict,
                 work_dir: str) -> None:
    """Write :data:`FIGURES` to ``work_dir``."""
    scatter, bins, calibration, grid = (osp.join(work_dir, name)
                                        for name in FIGURES)
    visualization.score_scatter(quality.pairs, scatter)
    visualization.score_per_iou_bin(quality.pairs, bins)
    visualization.reliability(quality.pairs, calibration)
    class_names = {i: cat['name'] for i, cat in quality.coco.cats.items()}
    visualization.detection_grid(quality.detections, image_paths,
                                 class_names, grid)


def write_summary(work_dir: str, summary: dict) -> None:
    Path(work_dir).mkdir(parents=True, exist_ok=True)
    with open(osp.join(work_dir, 'summary.json'), 'w') as f:
        json.dump(summary, f, indent=2)
    rows = ['| metric | key | value |', '|---|---|---|'] + [
        f'| {label} | `{key}` | {summary[key]:.4g} |'
        for key, label in TABLE if key in summary
    ]
    Path(work_dir, 'summary.md').write_text('\n'.join(rows) + '\n')


def main(argv=None) -> dict:
    args = parse_args(argv)
    print(f'[demo] dataset: {args.data_root}, seed {args.seed}', flush=True)
    if not args.no_generate:
        generate(args.data_root, args.num_train, args.num_val)
    train_seconds = 0.0 if args.checkpoint else train(args)
    metrics, quality, image_paths, eval_seconds = evaluate(args)
    summary = {key: metrics[name] for key, name in SUMMARY_KEYS.items()}
    summary.update({key: metrics[name] for key, name in BOUNDARY_KEYS.items()
                    if name in metrics})
    summary.update(train_seconds=round(train_seconds, 1),
                   eval_seconds=round(eval_seconds, 1), seed=args.seed)
    write_summary(args.work_dir, summary)
    draw_figures(quality, image_paths, args.work_dir)
    print(Path(args.work_dir, 'summary.md').read_text())
    print(f'[demo] wrote summary.json, summary.md, {", ".join(FIGURES)} '
          f'to {args.work_dir}')
    return summary


if __name__ == '__main__':
    main()
