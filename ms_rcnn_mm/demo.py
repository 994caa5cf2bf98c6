"""``make demo``: train and evaluate a small MS R-CNN on the CPU.

1. generates the synthetic shapes dataset (cached);
2. trains ``configs/demo/ms-rcnn_r18-w32_fpn_synthetic.py`` from scratch
   with mmdet's ``tools/train.py`` (through :mod:`ms_rcnn_mm.launch`);
3. evaluates the last checkpoint once, with mmdet's ``CocoMetric`` and
   :class:`~ms_rcnn_mm.evaluation.MaskIoUQualityMetric`;
4. writes ``summary.json``, ``summary.md`` and ``maskiou_scatter.png`` to
   the work dir.

Usage::

    python -m ms_rcnn_mm.demo [--work-dir work_dirs/demo] [--iters 450]
"""
import argparse
import json
import os.path as osp
import subprocess
import sys
import time
from pathlib import Path

from mmengine.config import Config
from mmengine.runner import Runner

from .datasets import generate
from .evaluation import MaskIoUQualityMetric

#: warm-up of the demo config, shortened for shorter runs
WARMUP_ITERS = 50
REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / 'configs' / 'demo' / 'ms-rcnn_r18-w32_fpn_synthetic.py'
#: keys of summary.json taken from the metrics of the evaluation
SUMMARY_KEYS = {
    'bbox_mAP': 'coco/bbox_mAP',
    'segm_mAP': 'maskiou/segm_mAP',
    'segm_mAP_cls_score': 'maskiou/segm_mAP_cls_score',
    'segm_mAP_gain': 'maskiou/segm_mAP_gain',
    'maskiou_pearson': 'maskiou/pearson',
    'maskiou_spearman': 'maskiou/spearman',
    'maskiou_pearson_all': 'maskiou/pearson_all',
    'maskiou_spearman_all': 'maskiou/spearman_all',
    'cls_score_pearson': 'maskiou/cls_score_pearson',
    'num_matched': 'maskiou/num_matched',
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--work-dir', default='work_dirs/demo')
    parser.add_argument('--data-root', default='data/synthetic')
    parser.add_argument('--config', default=str(CONFIG))
    parser.add_argument('--iters', type=int, default=None,
                        help='training iterations (the config: 450)')
    parser.add_argument('--num-train', type=int, default=300)
    parser.add_argument('--num-val', type=int, default=100)
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


def train(args) -> float:
    """Train with mmdet's tools/train.py; returns the wall time."""
    options = data_options(args.data_root)
    if args.iters:
        warmup = min(WARMUP_ITERS, args.iters // 5)
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
    """Test the last checkpoint once; returns metrics, metric, wall time."""
    cfg = Config.fromfile(args.config)
    cfg.merge_from_dict(dict(o.split('=', 1) for o in data_options(
        args.data_root)))
    cfg.work_dir = args.work_dir
    cfg.test_evaluator[1]['keep_pairs'] = True
    last = Path(args.work_dir, 'last_checkpoint').read_text().strip()
    cfg.load_from = last
    start = time.perf_counter()
    runner = Runner.from_cfg(cfg)
    metrics = runner.test()
    quality = next(m for m in runner.test_evaluator.metrics
                   if isinstance(m, MaskIoUQualityMetric))
    return metrics, quality, time.perf_counter() - start


def scatter(quality: MaskIoUQualityMetric, path: str) -> None:
    """Predicted MaskIoU and classification score against the true IoU."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    pairs = quality.pairs
    keep = pairs['matched']
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.2))
    for ax, key, title in zip(axes, ('predicted', 'cls_score'),
                              ('MaskIoU head', 'classification score')):
        ax.scatter(pairs['true'][keep], pairs[key][keep], s=4, alpha=0.5)
        ax.plot([0, 1], [0, 1], 'k--', lw=1)
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel='true MaskIoU',
               ylabel=title, title=f'{title} vs true MaskIoU')
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_summary(work_dir: str, summary: dict) -> None:
    Path(work_dir).mkdir(parents=True, exist_ok=True)
    with open(osp.join(work_dir, 'summary.json'), 'w') as f:
        json.dump(summary, f, indent=2)
    rows = ['| metric | value |', '|---|---|'] + [
        f'| {k} | {v:.4f} |' if isinstance(v, float) else f'| {k} | {v} |'
        for k, v in summary.items()
    ]
    Path(work_dir, 'summary.md').write_text('\n'.join(rows) + '\n')


def main(argv=None) -> dict:
    args = parse_args(argv)
    print(f'[demo] dataset: {args.data_root}', flush=True)
    generate(args.data_root, args.num_train, args.num_val)
    train_seconds = train(args)
    metrics, quality, eval_seconds = evaluate(args)
    summary = {key: metrics[name] for key, name in SUMMARY_KEYS.items()}
    summary.update(train_seconds=round(train_seconds, 1),
                   eval_seconds=round(eval_seconds, 1))
    write_summary(args.work_dir, summary)
    scatter(quality, osp.join(args.work_dir, 'maskiou_scatter.png'))
    print(json.dumps(summary, indent=2))
    print(f'[demo] wrote {args.work_dir}/summary.json, summary.md and '
          'maskiou_scatter.png')
    return summary


if __name__ == '__main__':
    main()
