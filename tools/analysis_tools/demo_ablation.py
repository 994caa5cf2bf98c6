"""Run ``make demo``'s training and evaluation for several recipes and seeds,
and tabulate the mean and spread of each summary key.

Each arm is a named set of ``--cfg-options`` over the demo config; every arm
gets the same data, iterations and seeds. A run whose ``summary.json``
exists is read, not rerun, so an interrupted ablation continues.

Usage::

    python tools/analysis_tools/demo_ablation.py --arms shipped logit \\
        --seeds 0 1 2 [--jobs 2] [--work-dir work_dirs/ablation] \\
        [--config CONFIG] [--eval-options KEY=VALUE ...] [--out FILE]

``--jobs 2`` runs two trainings at once, each on half of the CPU threads
(its wall times are then not those of ``make demo``).
"""
import argparse
import json
import os
import os.path as osp
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List, Optional

import numpy as np
import torch

from ms_rcnn_mm.datasets import generate
from ms_rcnn_mm.demo import DATA_ROOT

#: the recipes: name -> cfg-options over configs/demo/ms-rcnn_r18-w32_fpn_
#: synthetic.py (the shipped recipe is ``shipped``)
HEAD = 'model.roi_head.mask_iou_head.'
ARMS: Dict[str, List[str]] = {
    'shipped': [],
    'logit': [HEAD + "mask_input='logit'"],
    'probability': [HEAD + "mask_input='probability'"],
    'loss_weight_1': [HEAD + 'loss_iou.type=MSELoss',
                      HEAD + 'loss_iou.loss_weight=1.0'],
    'loss_weight_0.5': [HEAD + 'loss_iou.type=MSELoss',
                        HEAD + 'loss_iou.loss_weight=0.5'],
    'all_positives': [HEAD + 'loss_target_thr=None'],
    'detach_mask': [HEAD + 'detach_mask=True'],
    # mmdet's initialisation: the output bias at 0, not at the IoU prior
    'zero_prior': [HEAD + 'iou_prior=0.0'],
    'fc_1024': [HEAD + 'fc_out_channels=1024'],  # the paper's FC width
    'head_lr_x3': [
        "optim_wrapper.paramwise_cfg.custom_keys.mask_iou_head.lr_mult=3.0"],
    # half of the 128 sampled RoIs positive (a quarter in the demo): twice
    # the positives train the mask and MaskIoU heads per iteration
    'pos_fraction_0.5': ['model.train_cfg.rcnn.sampler.pos_fraction=0.5'],
    # the cascade (--config configs/demo/cascade-ms-rcnn_r18-w32_fpn_
    # synthetic.py): every stage's positives train the MaskIoU head (its
    # default), or the last stage's only
    'all_stages': ["model.roi_head.mask_iou_stages='all'"],
    'last_stage': ["model.roi_head.mask_iou_stages='last'"],
    # no MaskIoU gradient: the detector trains as without a MaskIoU head
    # (its untrained head is read by nothing but the MaskIoU columns)
    'no_mask_iou_loss': [HEAD + 'loss_iou.type=MSELoss',
                         HEAD + 'loss_iou.loss_weight=0.0'],
}
#: summary keys tabulated: key, column title
COLUMNS = (
    ('maskiou_pearson', 'Pearson MaskIoU'),
    ('cls_score_pearson', 'Pearson cls'),
    ('maskness_pearson', 'Pearson maskness'),
    ('maskiou_pearson_all', 'Pearson MaskIoU (all)'),
    ('segm_mAP', 'AP cls x MaskIoU'),
    ('segm_mAP_cls_score', 'AP cls'),
    ('segm_mAP_maskness', 'AP cls x maskness'),
    ('segm_mAP_gain', 'gain'),
    ('maskiou_ece', 'ECE'),
    ('bbox_mAP', 'box AP'),
    ('train_seconds', 'train s'),
)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--arms', nargs='+', default=['shipped'],
                        help=f'recipes among {", ".join(ARMS)}; '
                        'NAME+NAME combines them')
    parser.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2])
    parser.add_argument('--jobs', type=int, default=1)
    parser.add_argument('--config', help='demo config (default: the demo\'s)')
    parser.add_argument(
        '--data-root',
        help='a COCO dataset on disk (annotations/train.json and val.json) '
        'in place of the generated one, e.g. tests/data/fruits_nuts')
    parser.add_argument(
        '--eval-options', nargs='+', default=[], metavar='KEY=VALUE',
        help='evaluate each arm\'s trained checkpoint again with these '
        'test-time options, in <arm>/seed<k>/eval-<options> (no training)')
    parser.add_argument('--work-dir', default='work_dirs/ablation')
    parser.add_argument('--out', help='also write the table to this file')
    parser.add_argument(
        '--table-only', action='store_true',
        help='tabulate the finished runs; start none')
    return parser.parse_args(argv)


def arm_options(arm: str) -> List[str]:
    """The cfg-options of ``arm``, a name of :data:`ARMS` or names joined
    with ``+``."""
    unknown = [name for name in arm.split('+') if name not in ARMS]
    if unknown:
        raise SystemExit(f'unknown arm {unknown[0]!r}; known: '
                         f'{", ".join(ARMS)}')
    return [option for name in arm.split('+') for option in ARMS[name]]


def run(arm: str, seed: int, args: argparse.Namespace,
        threads: int) -> Optional[dict]:
    """One demo run (or its summary, when it already ran); None when it
    failed (its log is named). With ``args.eval_options`` it evaluates the
    arm's trained checkpoint again with them, in a folder of its own."""
    trained = osp.join(args.work_dir, arm, f'seed{seed}')
    out = trained
    command = [sys.executable, '-m', 'ms_rcnn_mm.demo', '--seed', str(seed)]
    if args.config:
        command += ['--config', args.config]
    if args.data_root:
        command += ['--no-generate', '--data-root', args.data_root]
    options = arm_options(arm)
    if args.eval_options:
        out = osp.join(trained, 'eval-' + '-'.join(args.eval_options))
        options += args.eval_options
        command += ['--checkpoint', osp.join(
            trained, f'iter_{last_iteration(trained)}.pth')]
    summary = osp.join(out, 'summary.json')
    if args.table_only and not osp.isfile(summary):
        return None
    if not osp.isfile(summary):
        command += ['--work-dir', out]
        if options:
            command += ['--cfg-options', *options]
        env = dict(os.environ, OMP_NUM_THREADS=str(threads))
        os.makedirs(out, exist_ok=True)
        with open(osp.join(out, 'demo.log'), 'w') as log:
            failed = subprocess.run(command, env=env, stdout=log,
                                    stderr=subprocess.STDOUT).returncode
        if failed:
            print(f'[ablation] {arm} seed {seed} failed: see '
                  f'{osp.join(out, "demo.log")}', flush=True)
            return None
    with open(summary) as f:
        return json.load(f)


def last_iteration(work_dir: str) -> int:
    """The iteration of the newest ``iter_N.pth`` in ``work_dir``."""
    done = [int(name[5:-4]) for name in os.listdir(work_dir)
            if name.startswith('iter_') and name.endswith('.pth')]
    if not done:
        raise FileNotFoundError(f'no iter_N.pth in {work_dir}: train the '
                                'arm first (without --eval-options)')
    return max(done)


def table(results: Dict[str, List[dict]]) -> str:
    """Markdown: one row per arm, ``mean +- std`` (population) per key."""
    rows = ['| arm | seeds | ' + ' | '.join(t for _, t in COLUMNS) + ' |',
            '|---|---|' + '---|' * len(COLUMNS)]
    for arm, runs in results.items():
        if not runs:
            continue
        cells = []
        for key, _ in COLUMNS:
            values = np.array([r[key] for r in runs], dtype=float)
            cells.append(f'{values.mean():.3f} +- {values.std():.3f}')
        seeds = ','.join(str(r['seed']) for r in runs)
        rows.append(f'| {arm} | {seeds} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(rows) + '\n'


def main(argv=None) -> str:
    args = parse_args(argv)
    for arm in args.arms:
        arm_options(arm)
    threads = max(1, torch.get_num_threads() // args.jobs)
    if not (args.data_root or args.table_only):
        # once, before the jobs: parallel runs would each write it while
        # the others read it
        generate(DATA_ROOT)
    # seed-major: a first look at every arm comes early
    jobs = [(arm, seed) for seed in args.seeds for arm in args.arms]
    with ThreadPoolExecutor(args.jobs) as pool:
        summaries = list(pool.map(
            lambda job: run(*job, args, threads), jobs))
    results: Dict[str, List[dict]] = {arm: [] for arm in args.arms}
    for (arm, _), summary in zip(jobs, summaries):
        if summary is not None:
            results[arm].append(summary)
    text = table(results)
    print(text)
    if args.out:
        with open(args.out, 'w') as f:
            f.write(text)
    return text


if __name__ == '__main__':
    main()
