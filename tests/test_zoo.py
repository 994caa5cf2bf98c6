"""Every shipped config builds this package's classes; the real backbones run;
the tools train and test."""
import json
import pickle
import subprocess
import sys

import pytest
import torch
from helpers import REPO, predict, synthetic_batch, train_step_losses
from mmdet.registry import MODELS
from mmengine.config import Config

from ms_rcnn_mm.datasets import generate
from ms_rcnn_mm.models import MaskIoUHead, MaskScoringRCNN, MaskScoringRoIHead

ZOO = sorted((REPO / 'configs' / 'ms-rcnn').glob('*.py'))
#: configs run forward in loss and predict mode, with their real depth
RUN = ('ms-rcnn-mm_r50_fpn_1x_coco.py',
       'ms-rcnn-mm_r50-dconv-c3-c5_fpn_1x_coco.py')


def build_without_pretrained(path):
    cfg = Config.fromfile(str(path))
    cfg.model.backbone.init_cfg = None
    torch.manual_seed(0)
    return cfg, MODELS.build(cfg.model)


def test_zoo_lists_the_issue_configs():
    names = {p.name for p in ZOO}
    for backbone in ('r50', 'r50-caffe', 'r101', 'r101-caffe'):
        for schedule in ('1x', '2x'):
            assert f'ms-rcnn-mm_{backbone}_fpn_{schedule}_coco.py' in names
    assert {'ms-rcnn-mm_r50-dconv-c3-c5_fpn_1x_coco.py',
            'ms-rcnn-mm_r101-dconv-c3-c5_fpn_1x_coco.py',
            'ms-rcnn-mm_r50-mdconv-c3-c5_fpn_1x_coco.py',
            'ms-rcnn-mm_x101-32x4d_fpn_1x_coco.py',
            'ms-rcnn-mm_x101-64x4d_fpn_1x_coco.py',
            'ms-rcnn-mm_x101-64x4d_fpn_2x_coco.py',
            'ms-rcnn-mm_r50_fpn_18e-softnms_coco.py'} <= names


@pytest.mark.parametrize('path', ZOO, ids=[p.stem for p in ZOO])
def test_config_builds_our_classes(path):
    cfg, model = build_without_pretrained(path)
    assert cfg.custom_imports.imports == ['ms_rcnn_mm']
    assert type(model) is MaskScoringRCNN
    assert type(model.roi_head) is MaskScoringRoIHead
    assert type(model.roi_head.mask_iou_head) is MaskIoUHead
    assert cfg.model.train_cfg.rcnn.mask_thr_binary == 0.5
    head = model.roi_head.mask_iou_head
    assert head.fc_mask_iou.out_features == 80
    assert model.roi_head.bbox_head.num_classes == 80


def test_paper_config_uses_18_epochs_and_gaussian_soft_nms():
    cfg = Config.fromfile(
        str(REPO / 'configs/ms-rcnn/ms-rcnn-mm_r50_fpn_18e-softnms_coco.py'))
    assert cfg.train_cfg.max_epochs == 18
    assert cfg.param_scheduler[1].milestones == [14, 17]
    nms = cfg.model.test_cfg.rcnn.nms
    assert (nms.type, nms.method) == ('soft_nms', 'gaussian')


@pytest.mark.parametrize('name', RUN)
def test_real_backbone_trains_and_predicts(name):
    cfg, model = build_without_pretrained(REPO / 'configs' / 'ms-rcnn' / name)
    batch = synthetic_batch(num_images=1, size=128, num_instances=[3],
                            num_classes=80)
    losses = train_step_losses(model.train(), batch)
    total, _ = model.parse_losses(losses)
    assert torch.isfinite(total) and torch.isfinite(losses['loss_mask_iou'])
    total.backward()
    if 'dconv' in name:
        dcn = model.backbone.layer2[0].conv2
        assert type(dcn).__name__ == 'DeformConv2dPack'
        assert dcn.conv_offset.weight.grad is not None
    model.eval().test_cfg.rcnn.score_thr = 0.0
    pred = predict(model, batch)[0]
    assert len(pred) > 0 and pred.mask_scores.shape == pred.scores.shape


def run_tool(*args):
    return subprocess.run([sys.executable, *map(str, args)],
                          capture_output=True, text=True, cwd=REPO)


@pytest.mark.parametrize('tool', ['train', 'test'])
def test_tool_help(tool):
    out = run_tool(REPO / 'tools' / f'{tool}.py', '--help')
    assert out.returncode == 0, out.stderr[-2000:]
    for flag in ('--work-dir', '--cfg-options', '--launcher'):
        assert flag in out.stdout


def test_amp_without_cuda_stops_with_a_message():
    out = run_tool(REPO / 'tools' / 'train.py',
                   REPO / 'configs/ms-rcnn/ms-rcnn-mm_r50_fpn_1x_coco.py',
                   '--amp')
    assert out.returncode != 0
    assert '--amp needs a CUDA device' in out.stderr


def test_tools_train_and_test_two_iterations(tmp_path):
    data = generate(tmp_path / 'data', num_train=8, num_val=4, size=128)
    root = f'{data}/'
    ann = f'{root}annotations/val.json'
    options = [
        f'train_dataloader.dataset.data_root={root}',
        f'val_dataloader.dataset.data_root={root}',
        f'test_dataloader.dataset.data_root={root}',
        f'test_evaluator.0.ann_file={ann}',
        f'test_evaluator.1.ann_file={ann}',
        f'val_evaluator.0.ann_file={ann}', f'val_evaluator.1.ann_file={ann}',
        'train_cfg.max_iters=2', 'train_cfg.val_interval=2',
        'param_scheduler.0.end=1', 'param_scheduler.1.begin=1',
        'param_scheduler.1.end=2', 'train_dataloader.batch_size=2',
        'train_dataloader.num_workers=0',
        'train_dataloader.persistent_workers=False',
        'val_dataloader.num_workers=0',
        'val_dataloader.persistent_workers=False',
        'test_dataloader.num_workers=0',
        'test_dataloader.persistent_workers=False'
    ]
    config = REPO / 'configs/demo/ms-rcnn_r18-w32_fpn_synthetic.py'
    work = tmp_path / 'work'
    out = run_tool(REPO / 'tools/train.py', config, '--work-dir', work,
                   '--cfg-options', *options)
    assert out.returncode == 0, out.stderr[-3000:]
    assert (work / 'iter_2.pth').is_file()
    results = tmp_path / 'results.pkl'
    out = run_tool(REPO / 'tools/test.py', config, work / 'iter_2.pth',
                   '--work-dir', work, '--out', results, '--cfg-options',
                   *options)
    assert out.returncode == 0, out.stderr[-3000:]
    with open(results, 'rb') as f:
        dumped = pickle.load(f)
    assert len(dumped) == 4
    assert {'mask_ious', 'mask_scores', 'scores'} <= set(
        dumped[0]['pred_instances'])
    logs = sorted(work.glob('*/*/*.json')) + sorted(work.glob('*/*.json'))
    metrics = [json.loads(line) for log in logs
               for line in log.read_text().splitlines()
               if 'maskiou/segm_mAP' in line]
    assert metrics and 0 <= metrics[-1]['maskiou/segm_mAP'] <= 1
