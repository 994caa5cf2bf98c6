"""The synthetic dataset, the mask-scoring metric and a shortened
``make demo``."""
import json
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from helpers import load_tool
from mmengine.config import Config
from pycocotools.coco import COCO

from ms_rcnn_mm import demo, visualization
from ms_rcnn_mm.datasets import CLASSES, generate
from ms_rcnn_mm.datasets.synthetic import digest
from ms_rcnn_mm.evaluation import MaskIoUQualityMetric

REPO = Path(__file__).resolve().parents[1]
FRUITS_CONFIG = (REPO / 'configs' / 'demo' /
                 'ms-rcnn_r18-w32_fpn_fruits-nuts.py')
#: the real photographs, copied into the repository (MIT licence)
FRUITS_NUTS = REPO / 'tests' / 'data' / 'fruits_nuts'
#: what summary.json must hold (the issue's list)
SUMMARY_KEYS = ('bbox_mAP', 'segm_mAP', 'segm_mAP_cls_score',
                'segm_mAP_maskness', 'segm_mAP_gain', 'maskiou_pearson',
                'maskiou_spearman', 'maskness_pearson', 'maskiou_ece',
                'train_seconds', 'eval_seconds', 'seed')


def test_generator_is_deterministic_and_valid_coco(tmp_path):
    a = generate(tmp_path / 'a', num_train=6, num_val=4, size=96, seed=3)
    b = generate(tmp_path / 'b', num_train=6, num_val=4, size=96, seed=3)
    c = generate(tmp_path / 'c', num_train=6, num_val=4, size=96, seed=4)
    assert digest(a) == digest(b) != digest(c)
    coco = COCO(str(a / 'annotations' / 'train.json'))
    assert [cat['name'] for cat in coco.loadCats(coco.getCatIds())] == list(
        CLASSES)
    assert len(coco.imgs) == 6 and len(coco.anns) >= 12
    for ann in coco.anns.values():
        mask = coco.annToMask(ann)
        assert mask.sum() == ann['area'] > 0
        x, y, w, h = ann['bbox']
        ys, xs = np.nonzero(mask)
        assert (x, y, w, h) == (xs.min(), ys.min(), np.ptp(xs) + 1,
                                np.ptp(ys) + 1)
    # cached: a second call with the same settings rewrites nothing
    stamp = (a / 'train' / '00000.jpg').stat().st_mtime_ns
    generate(tmp_path / 'a', num_train=6, num_val=4, size=96, seed=3)
    assert (a / 'train' / '00000.jpg').stat().st_mtime_ns == stamp


def square(size, x0, y0, side):
    mask = np.zeros((size, size), np.uint8)
    mask[y0:y0 + side, x0:x0 + side] = 1
    return mask


def write_coco(path, size, gts):
    anns = []
    for k, (label, mask) in enumerate(gts):
        rle = mask_util.encode(np.asfortranarray(mask))
        rle['counts'] = rle['counts'].decode()
        anns.append(dict(id=k + 1, image_id=1, category_id=label,
                         segmentation=rle, area=float(mask.sum()),
                         bbox=[float(v) for v in mask_util.toBbox(rle)],
                         iscrowd=0))
    path.write_text(json.dumps(dict(
        images=[dict(id=1, file_name='x.jpg', width=size, height=size)],
        annotations=anns,
        categories=[dict(id=1, name='a'), dict(id=2, name='b')])))


def test_metric_against_a_hand_computed_case(tmp_path):
    """Two GT squares; three detections of known true IoU.

    det A: the first GT exactly (true IoU 1), cls 0.6, predicted IoU 0.9
    det B: half of the second GT (true IoU 0.5), cls 0.9, predicted IoU 0.4
    det C: a false positive (true IoU 0), cls 0.8, predicted IoU 0.1
    Ranked by cls alone, B (IoU 0.5) and C come first; by cls x MaskIoU,
    A does: segm AP must rise.
    """
    size = 64
    gt_a, gt_b = square(size, 4, 4, 20), square(size, 36, 36, 20)
    ann_file = tmp_path / 'gt.json'
    write_coco(ann_file, size, [(1, gt_a), (1, gt_b)])
    det_b = square(size, 36, 36, 20)
    det_b[:, 46:] = 0  # left half: IoU 0.5
    det_c = square(size, 40, 2, 14)
    masks = torch.from_numpy(np.stack([gt_a, det_b, det_c])).bool()
    boxes = torch.tensor([[4., 4, 24, 24], [36, 36, 46, 56], [40, 2, 54, 16]])
    cls = torch.tensor([0.6, 0.9, 0.8])
    pred_iou = torch.tensor([0.9, 0.4, 0.1])
    metric = MaskIoUQualityMetric(str(ann_file), keep_pairs=True)
    metric.process({}, [dict(img_id=1, pred_instances=dict(
        masks=masks, bboxes=boxes, labels=torch.zeros(3, dtype=torch.long),
        scores=cls, mask_ious=pred_iou, mask_scores=cls * pred_iou,
        maskness=torch.full((3, ), 0.9)))])
    out = metric.compute_metrics(metric.results)
    np.testing.assert_allclose(metric.pairs['true'], [1.0, 0.5, 0.0],
                               atol=1e-6)
    assert metric.pairs['matched'].tolist() == [True, True, False]
    # floats: mmengine's JSON logs write integers as null
    assert out['num_matched'] == 2.0 and out['num_detections'] == 3.0
    assert all(isinstance(v, float) for v in out.values())
    assert [d['mask_iou'] for d in metric.detections] == pytest.approx(
        [0.9, 0.4, 0.1])
    assert out['segm_mAP'] > out['segm_mAP_cls_score']
    assert out['segm_mAP_gain'] == pytest.approx(
        out['segm_mAP'] - out['segm_mAP_cls_score'])
    # all detections: pearson of (0.9, 0.4, 0.1) with (1, 0.5, 0)
    want = np.corrcoef([0.9, 0.4, 0.1], [1.0, 0.5, 0.0])[0, 1]
    assert out['pearson_all'] == pytest.approx(want, abs=1e-6)
    assert np.isnan(out['pearson'])  # 2 matched points: undefined


def test_binned_means_by_hand():
    true = np.array([0.05, 0.08, 0.55, 1.0, 0.95])
    scores = np.array([0.2, 0.4, 0.5, 0.9, 0.7])
    means = visualization.binned_means(scores, true)
    assert len(means) == 10
    # bins [0, .1): 0.3; [.5, .6): 0.5; [.9, 1]: 0.8 (1.0 in the last bin)
    np.testing.assert_allclose(means[[0, 5, 9]], [0.3, 0.5, 0.8])
    assert np.isnan(np.delete(means, [0, 5, 9])).all()


def assert_demo_outputs(work_dir: Path, summary: dict, iters: int) -> None:
    """summary.json (the issue's keys), summary.md, figures, checkpoint."""
    written = json.loads((work_dir / 'summary.json').read_text())
    for key in SUMMARY_KEYS:
        assert key in written, key
    assert written == pytest.approx(summary, nan_ok=True)
    assert 0 <= written['segm_mAP'] <= 1 and 0 <= written['bbox_mAP'] <= 1
    assert written['train_seconds'] > 0 and written['eval_seconds'] > 0
    assert written['segm_mAP_gain'] == pytest.approx(
        written['segm_mAP'] - written['segm_mAP_cls_score'])
    # the demo configs ask for Boundary AP of the same rankings
    assert 0 <= written['boundary_mAP'] <= 1
    assert written['boundary_mAP_gain'] == pytest.approx(
        written['boundary_mAP'] - written['boundary_mAP_cls_score'])
    table = (work_dir / 'summary.md').read_text().splitlines()
    assert table[0].startswith('| metric |')
    assert len(table) == 2 + len(demo.TABLE)
    for name in demo.FIGURES:
        assert (work_dir / name).stat().st_size > 10_000, name
    assert (work_dir / f'iter_{iters}.pth').is_file()


def test_fruits_nuts_config_takes_the_root_from_the_environment(
        monkeypatch):
    monkeypatch.setenv('MS_RCNN_FRUITS_NUTS', '/data/fn')
    cfg = Config.fromfile(str(FRUITS_CONFIG))
    assert cfg.train_dataloader.dataset.data_root == '/data/fn/'
    assert cfg.test_dataloader.dataset.data_root == '/data/fn/'
    assert [e['ann_file'] for e in cfg.test_evaluator] == [
        '/data/fn/annotations/val.json'] * 2
    assert cfg.model.roi_head.mask_iou_head.num_classes == 3
    monkeypatch.delenv('MS_RCNN_FRUITS_NUTS')
    cfg = Config.fromfile(str(FRUITS_CONFIG))
    # without it: the copy in this repository, relative to its root
    root = cfg.train_dataloader.dataset.data_root
    assert root == 'tests/data/fruits_nuts/'
    assert (REPO / root / 'annotations' / 'val.json').is_file()


def test_fruits_nuts_trains_and_evaluates(tmp_path):
    """A few iterations on the real photographs, then the demo's
    evaluation: every metric key and figure is there."""
    work_dir = tmp_path / 'fruits'
    summary = demo.main([
        '--config', str(FRUITS_CONFIG), '--data-root', str(FRUITS_NUTS),
        '--no-generate', '--work-dir', str(work_dir), '--iters', '2'
    ])
    assert_demo_outputs(work_dir, summary, iters=2)
    # the 4 validation photographs, 100 detections at most each
    assert 0 < summary['num_detections'] <= 400


def test_shortened_demo_end_to_end(tmp_path):
    work_dir = tmp_path / 'demo'
    summary = demo.main([
        '--work-dir', str(work_dir), '--data-root', str(tmp_path / 'data'),
        '--iters', '6', '--num-train', '16', '--num-val', '8'
    ])
    assert_demo_outputs(work_dir, summary, iters=6)
    # the trained checkpoint evaluated again, no training: the same boxes
    again = demo.main([
        '--work-dir', str(tmp_path / 'again'), '--data-root',
        str(tmp_path / 'data'), '--num-train', '16', '--num-val', '8',
        '--checkpoint', str(work_dir / 'iter_6.pth')])
    assert again['train_seconds'] == 0
    assert not list((tmp_path / 'again').glob('iter_*.pth'))
    for key in ('bbox_mAP', 'segm_mAP_cls_score', 'num_detections'):
        assert again[key] == summary[key], key


def test_demo_is_seeded(tmp_path):
    """The same seed trains the same model (every metric equal); another
    seed another one. Catches a seed that does not reach training."""
    runs = {}
    for name, seed in (('a', 0), ('b', 0), ('c', 1)):
        runs[name] = demo.main([
            '--work-dir', str(tmp_path / name), '--data-root',
            str(tmp_path / 'data'), '--iters', '3', '--num-train', '8',
            '--num-val', '4', '--seed', str(seed)])
    metrics = [k for k in runs['a'] if not k.endswith('_seconds')]
    assert runs['a']['seed'] == 0 and runs['c']['seed'] == 1
    assert {k: runs['a'][k] for k in metrics} == pytest.approx(
        {k: runs['b'][k] for k in metrics}, nan_ok=True)
    assert any(runs['a'][k] != runs['c'][k] for k in metrics)


def test_ablation_table_reads_finished_runs(tmp_path):
    """Runs with a summary.json are read, not rerun; each cell is the mean
    and population spread over the seeds.

    Catches: a rerun of a finished arm, the sample instead of the
    population spread, seeds mixed across arms.
    """
    ablation = load_tool('analysis_tools/demo_ablation.py')
    keys = [key for key, _ in ablation.COLUMNS]
    for seed, value in ((0, 0.2), (1, 0.6)):
        run = tmp_path / 'logit' / f'seed{seed}'
        run.mkdir(parents=True)
        (run / 'summary.json').write_text(json.dumps(
            dict({key: value for key in keys}, seed=seed)))
    text = ablation.main(['--arms', 'logit', '--seeds', '0', '1',
                          '--work-dir', str(tmp_path)])
    row = text.splitlines()[2].split(' | ')
    assert row[0] == '| logit' and row[1] == '0,1'
    assert row[2:-1] == ['0.400 +- 0.200'] * (len(keys) - 1)
    assert ablation.arm_options('logit+detach_mask') == [
        "model.roi_head.mask_iou_head.mask_input='logit'",
        'model.roi_head.mask_iou_head.detach_mask=True']
    with pytest.raises(SystemExit, match="unknown arm 'sigmoid'"):
        ablation.arm_options('sigmoid')
