"""The analysis tools and the mim entry points, on the demo config.

One module-scoped set of real runs (2 iterations each, on a generated
dataset) feeds the mim and model-zoo table tests: ``mim train`` and
``mim test`` of ``ms_rcnn_mm`` (the config found through the package's
``.mim``), and ``tools/train.py`` of the matching Mask R-CNN baseline.
"""
import csv
import io
import json
import pickle
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from helpers import REPO
from mmengine.config import Config

from ms_rcnn_mm.analysis.models import (BASELINE, MMDET, OURS, VARIANTS,
                                        build_variants, force_detections,
                                        load_config, synthetic_batch,
                                        variant_cfg)
from ms_rcnn_mm.analysis.zoo_table import COLUMNS
from ms_rcnn_mm.datasets import generate
from ms_rcnn_mm.demo import data_options

TOOLS = REPO / 'tools' / 'analysis_tools'
DEMO = REPO / 'configs' / 'demo' / 'ms-rcnn_r18-w32_fpn_synthetic.py'
OURS_NAME = DEMO.stem
BASELINE_NAME = 'mask-rcnn_r18-w32_fpn_synthetic'
MIM = Path(sys.executable).with_name('mim')
#: two training iterations of the demo config
SHORT = ['train_cfg.max_iters=2', 'train_cfg.val_interval=2',
         'param_scheduler.0.end=1', 'param_scheduler.1.begin=1',
         'param_scheduler.1.end=2', 'train_dataloader.batch_size=2']


def run(*args, cwd=REPO):
    return subprocess.run([str(a) for a in args], capture_output=True,
                          text=True, cwd=cwd)


def json_lines(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


# ----------------------------------------------------------------- --help


@pytest.mark.parametrize('tool, flags', [
    ('benchmark_table.py', ['--baseline-root', '--metafile', '--md',
                            '--csv']),
    ('speed_benchmark.py', ['--shape', '--batch', '--repeats', '--warmup',
                            '--device', '--amp', '--out']),
    ('get_flops.py', ['--shape', '--num-dets', '--cfg-options', '--out']),
    ('head_throughput.py', ['--rois', '--repeats', '--gemm-size',
                            '--threads', '--out']),
    ('mask_head_layout.py', ['--rois', '--repeats', '--threads', '--out']),
])
def test_tool_help(tool, flags):
    out = run(sys.executable, TOOLS / tool, '--help')
    assert out.returncode == 0, out.stderr[-2000:]
    for flag in flags:
        assert flag in out.stdout


@pytest.mark.parametrize('tool, flag', [
    ('head_throughput.py', '--gemm-size'), ('mask_head_layout.py', '--rois')])
def test_timing_tools_refuse_a_count_below_one(tool, flag):
    # a dropped check, or one that reads another option, would run or fail
    # elsewhere instead of this usage error
    out = run(sys.executable, TOOLS / tool, DEMO, flag, 0)
    assert out.returncode == 2, out.stderr[-2000:]
    assert flag in out.stderr and 'must be >= 1' in out.stderr


# ------------------------------------------------------------- get_flops


def mask_iou_head_macs(head) -> int:
    """The MaskIoU head's multiply-adds per RoI, from its shapes: 3x3 convs
    on the RoI feature plus the pooled mask (the last one stride 2), then
    the FCs."""
    size, channels = head['roi_feat_size'], head['conv_out_channels']
    macs = size**2 * channels * (head['in_channels'] + 1) * 9
    macs += 2 * size**2 * channels * channels * 9
    macs += (size // 2)**2 * channels * channels * 9
    fc = head['fc_out_channels']
    macs += channels * (size // 2)**2 * fc + fc * fc
    return macs + fc * head['num_classes']


def test_get_flops_counts_the_mask_iou_head_by_hand(tmp_path):
    out_file = tmp_path / 'flops.json'
    out = run(sys.executable, TOOLS / 'get_flops.py', DEMO, '--shape', 64,
              96, '--batch', 2, '--num-dets', 10, '--out', out_file)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out_file.read_text())
    head_cfg = Config.fromfile(str(DEMO)).model.roi_head.mask_iou_head
    # the demo head is 64 channels wide: no default value is left in play
    head = dict(roi_feat_size=14, **head_cfg)
    assert head['num_classes'] == 4 and head['conv_out_channels'] == 64
    expected = mask_iou_head_macs(head)
    assert report['head']['rois_per_image'] == 10
    assert report['head']['gmacs_per_roi'] * 1e9 == pytest.approx(
        expected, rel=1e-12)
    assert report['head']['gmacs_per_image'] * 1e9 == pytest.approx(
        10 * expected, rel=1e-12)
    parts = report['components']
    assert report['total_gmacs_per_image'] == pytest.approx(
        sum(p['gmacs_per_image'] for p in parts.values()))
    rest = report['total_gmacs_per_image'] - report['head'][
        'gmacs_per_image']
    assert report['head']['share'] == pytest.approx(
        report['head']['gmacs_per_image'] / rest)
    assert parts['roi_head.mask_head']['rows_per_image'] == 10
    assert parts['backbone']['rows_per_image'] == 1
    assert 'MaskIoU head' in out.stdout


def test_get_flops_refuses_a_mask_rcnn_config(tmp_path):
    config = tmp_path / 'mask-rcnn.py'
    config.write_text(
        "_base_ = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'\n")
    out = run(sys.executable, TOOLS / 'get_flops.py', config)
    assert out.returncode != 0
    assert 'has no mask_iou_head' in out.stderr and str(config) in out.stderr


def test_head_throughput_counts_the_head_and_the_product(tmp_path):
    # a rate of FLOPs (2 per multiply-add) or a head run on other RoIs than
    # --rois would break these equalities
    out_file = tmp_path / 'throughput.json'
    out = run(sys.executable, TOOLS / 'head_throughput.py', DEMO, '--rois', 6,
              '--repeats', 2, '--gemm-size', 128, '--threads', 1, '--out',
              out_file)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out_file.read_text())
    head = dict(roi_feat_size=14,
                **Config.fromfile(str(DEMO)).model.roi_head.mask_iou_head)
    assert result['head_gmacs'] * 1e9 == pytest.approx(
        6 * mask_iou_head_macs(head), rel=1e-12)
    assert result['gemm_gmac_per_s'] == pytest.approx(
        128**3 / 1e9 / (result['gemm_ms'] / 1e3))
    assert result['head_gmac_per_s'] == pytest.approx(
        result['head_gmacs'] / (result['head_ms'] / 1e3))
    assert result['head_ms_at_gemm_rate'] == pytest.approx(
        result['head_gmacs'] / result['gemm_gmac_per_s'] * 1e3)
    assert result['rois'] == 6 and result['threads'] == 1
    assert f"{result['head_gmac_per_s']:.1f} GMAC/s" in out.stdout


def test_mask_head_layout_times_the_same_head_both_ways(tmp_path):
    # the two layouts on other weights, or a ratio of other times, would
    # break these equalities
    out_file = tmp_path / 'layout.json'
    out = run(sys.executable, TOOLS / 'mask_head_layout.py', DEMO, '--rois',
              5, '--repeats', 2, '--threads', 1, '--out', out_file)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out_file.read_text())
    assert 0 <= result['max_abs_diff'] < 1e-4
    assert result['ratio'] == pytest.approx(
        result['channels_last_ms'] / result['contiguous_ms'])
    assert result['rois'] == 5 and result['threads'] == 1
    assert f"channels-last {result['channels_last_ms']:.1f} ms" in out.stdout


# ------------------------------------------------------- the three models


def test_variants_share_weights_and_detections():
    cfg = load_config(str(DEMO))
    models = build_variants(force_detections(cfg.model, 20))
    assert [type(models[v]).__module__.split('.')[0] for v in VARIANTS] == [
        'ms_rcnn_mm', 'mmdet', 'mmdet']
    assert not hasattr(models[BASELINE].roi_head, 'mask_iou_head')
    batch = synthetic_batch(2, 96, 128, seed=1)
    data = models[OURS].data_preprocessor(batch, training=False)
    preds = {}
    with torch.no_grad():
        for name, model in models.items():
            samples = model.eval()(**data, mode='predict')
            preds[name] = [s.pred_instances for s in samples]
    for ours, base, mmdet in zip(preds[OURS], preds[BASELINE], preds[MMDET]):
        assert len(ours) == 20
        torch.testing.assert_close(ours.bboxes, base.bboxes)
        torch.testing.assert_close(ours.masks, base.masks)
        torch.testing.assert_close(ours.scores, base.scores)
        # mmdet overwrites scores with cls x MaskIoU, without clamping
        torch.testing.assert_close(
            ours.mask_scores,
            torch.minimum(mmdet.scores.clamp(min=0), ours.scores))


def test_baseline_variant_of_each_zoo_config_is_its_metafile_baseline():
    """Config-level twin of the previous test: for every model of the
    metafile, removing what MS R-CNN adds gives its Baseline Config."""
    from ms_rcnn_mm.analysis.zoo_table import load_config_ref
    metafile = REPO / 'configs' / 'ms-rcnn' / 'metafile.yml'
    for model in yaml.safe_load(metafile.read_text())['Models']:
        ours = load_config_ref(model['Config'], metafile)
        base = load_config_ref(model['Metadata']['Baseline Config'], metafile)
        derived = variant_cfg(ours.model, BASELINE)
        assert derived.train_cfg.rcnn.pop('mask_thr_binary') == 0.5
        assert derived.to_dict() == base.model.to_dict(), model['Name']
        for key in ('train_cfg', 'param_scheduler', 'optim_wrapper',
                    'train_dataloader', 'test_dataloader', 'auto_scale_lr'):
            assert ours.get(key) == base.get(key), (model['Name'], key)


# ------------------------------------------------------- speed_benchmark


def test_speed_benchmark_reports_all_three_models(tmp_path):
    out_file = tmp_path / 'speed.json'
    out = run(sys.executable, TOOLS / 'speed_benchmark.py', DEMO, '--shape',
              64, 64, '--batch', 1, '--repeats', 2, '--warmup', 0,
              '--num-dets', 10, '--threads', 1, '--out', out_file,
              '--cfg-options', 'model.test_cfg.rpn.max_per_img=100',
              'model.train_cfg.rpn_proposal.max_per_img=100')
    assert out.returncode == 0, out.stderr[-3000:]
    info = json.loads(out_file.read_text())
    assert len(info['load_average_before']) == 3
    assert info['machine']['threads'] == 1
    (result, ) = info['results']
    assert (result['config'], result['shape'], result['batch']) == (
        str(DEMO), [64, 64], 1)
    for mode in ('train', 'infer'):
        assert set(result[f'{mode}_ms']) == set(VARIANTS)
        for name in VARIANTS:
            assert len(result['samples'][mode][name]) == 2
            assert result[f'{mode}_ms'][name] > 0
            assert result[f'{mode}_peak_mib'][name] is not None
        for name in (OURS, MMDET):
            ratio = result['ratios'][name][mode]
            assert ratio == pytest.approx(result[f'{mode}_ms'][name] /
                                          result[f'{mode}_ms'][BASELINE])
            # paired: the median (of 2 rounds: the mean) of the per-round
            # ratios, not the ratio of the medians
            per_round = [t / b for t, b in zip(
                result['samples'][mode][name],
                result['samples'][mode][BASELINE])]
            assert result['ratios'][name][f'{mode}_paired'] == (
                pytest.approx(sum(per_round) / 2))
    infer = result['macs']['infer']
    # every model's mask (and MaskIoU) head saw exactly --num-dets RoIs
    assert {n: v['rois'] for n, v in infer.items()} == dict.fromkeys(
        VARIANTS, 10)
    assert infer[BASELINE]['mask_iou_gmacs'] == 0
    ours = infer[OURS]
    assert ours['gmacs'] - ours['mask_iou_gmacs'] == pytest.approx(
        infer[BASELINE]['gmacs'])
    assert ours['mask_iou_share'] == pytest.approx(
        ours['mask_iou_gmacs'] / infer[BASELINE]['gmacs'])
    assert infer[MMDET]['mask_iou_gmacs'] == pytest.approx(
        ours['mask_iou_gmacs'])
    for name in VARIANTS:
        assert name in out.stdout
    assert 'arithmetic' in out.stdout and 'infer x paired' in out.stdout


def test_speed_benchmark_amp_needs_cuda():
    out = run(sys.executable, TOOLS / 'speed_benchmark.py', DEMO, '--amp')
    assert out.returncode == 2
    assert '--amp needs --device cuda' in out.stderr


# --------------------------------------------- mim and the model-zoo table


@pytest.fixture(scope='module')
def zoo_runs(tmp_path_factory):
    """``mim train`` + ``mim test`` of the demo config, ``tools/train.py``
    of its Mask R-CNN baseline; returns the work-dir root."""
    tmp = tmp_path_factory.mktemp('zoo')
    data = generate(tmp / 'data', num_train=4, num_val=2, size=96)
    options = data_options(str(data)) + SHORT
    root = tmp / 'work_dirs'
    ours = root / OURS_NAME
    # a config name, not a path: mim finds it in ms_rcnn_mm/.mim/configs
    trained = run(MIM, 'train', 'ms_rcnn_mm', DEMO.name, '--work-dir', ours,
                  '--cfg-options', *options, cwd=tmp)
    assert trained.returncode == 0, trained.stdout[-3000:]
    tested = run(MIM, 'test', 'ms_rcnn_mm', DEMO.name, '--checkpoint',
                 ours / 'iter_2.pth', '--work-dir', ours, '--out',
                 tmp / 'results.pkl', '--cfg-options', *options, cwd=tmp)
    assert tested.returncode == 0, tested.stdout[-3000:]
    cfg = Config.fromfile(str(DEMO))
    cfg.merge_from_dict(dict(o.split('=', 1) for o in data_options(
        str(data))))
    cfg.model = variant_cfg(cfg.model, BASELINE)
    cfg.val_evaluator = cfg.test_evaluator = cfg.val_evaluator[:1]
    baseline_config = tmp / f'{BASELINE_NAME}.py'
    cfg.dump(str(baseline_config))
    base = run(sys.executable, REPO / 'tools' / 'train.py', baseline_config,
               '--work-dir', root / BASELINE_NAME, '--cfg-options', *SHORT)
    assert base.returncode == 0, base.stderr[-3000:]
    metafile = tmp / 'metafile.yml'
    metafile.write_text(yaml.safe_dump(dict(Models=[dict(
        Name=OURS_NAME, Config=str(DEMO),
        Metadata={'Baseline Config': str(baseline_config)})])))
    return dict(root=root, metafile=metafile, trained=trained,
                tested=tested, results=tmp / 'results.pkl')


def test_mim_train_and_test_find_the_config_in_the_package(zoo_runs):
    for step, tool in (('trained', 'train.py'), ('tested', 'test.py')):
        stdout = zoo_runs[step].stdout
        found = re.search(r'will use (\S+) instead', stdout).group(1)
        # the installed package's copy (or, editable, its forwarding stub)
        assert found.endswith(f'ms_rcnn_mm/.mim/configs/demo/{DEMO.name}')
        assert Path(found).is_file()
        assert not found.startswith(str(REPO / 'configs'))
        mim_root = found[:-len(f'configs/demo/{DEMO.name}')]
        assert f'{mim_root}tools/{tool} {found}' in stdout
    ours = zoo_runs['root'] / OURS_NAME
    checkpoint = torch.load(ours / 'iter_2.pth', map_location='cpu',
                            weights_only=False)
    assert checkpoint['meta']['iter'] == 2
    assert any(k.startswith('roi_head.mask_iou_head.')
               for k in checkpoint['state_dict'])
    assert 'Testing finished successfully' in zoo_runs['tested'].stdout
    with open(zoo_runs['results'], 'rb') as f:
        predictions = pickle.load(f)
    assert len(predictions) == 2  # the 2 test images
    assert {'mask_ious', 'mask_scores'} <= set(
        predictions[0]['pred_instances'])


def table(zoo_runs, tmp_path, *extra):
    md, csv_file = tmp_path / 'table.md', tmp_path / 'table.csv'
    out = run(sys.executable, TOOLS / 'benchmark_table.py',
              zoo_runs['root'], '--metafile', zoo_runs['metafile'], '--md',
              md, '--csv', csv_file, *extra)
    return out, md, csv_file


def test_benchmark_table_from_real_runs(zoo_runs, tmp_path):
    out, md, csv_file = table(zoo_runs, tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    (row, ) = csv.DictReader(io.StringIO(csv_file.read_text()))
    # what the result files hold, read here the simple way
    ours = zoo_runs['root'] / OURS_NAME
    (test_log, ) = [p for p in ours.glob('*/*.json')]
    test = json_lines(test_log)[-1]
    base_scalars = json_lines(next(
        (zoo_runs['root'] / BASELINE_NAME).glob('*/vis_data/scalars.json')))
    base_val = [r for r in base_scalars if 'coco/segm_mAP' in r][-1]
    train_scalars = json_lines(next(ours.glob('*/vis_data/scalars.json')))
    assert not any('memory' in r for r in train_scalars)  # CPU run
    assert row['Mem (GB)'] == ''
    assert row['box AP'] == f"{100 * test['coco/bbox_mAP']:.1f}"
    assert row['mask AP'] == f"{100 * test['coco/segm_mAP']:.1f}"
    assert row['mask AP of the Mask R-CNN baseline'] == (
        f"{100 * base_val['coco/segm_mAP']:.1f}")
    assert row['gain'] == (
        f"{100 * (test['coco/segm_mAP'] - base_val['coco/segm_mAP']):+.1f}")
    # the demo config tests 4 images a batch; the test set has 2
    assert float(row['Inf time (fps)']) == pytest.approx(
        4 / test['time'], abs=0.05)
    assert (row['Backbone'], row['Style'], row['Lr schd']) == (
        'R-18', 'pytorch', '2 iters')
    assert row['Download'] == ''
    assert str(test_log) in row['Sources']
    lines = md.read_text().splitlines()
    assert lines[0] == '| ' + ' | '.join(COLUMNS) + ' |'
    assert f'[config](./{DEMO.name})' in lines[2]
    assert out.stdout == md.read_text()


def test_benchmark_table_leaves_unmeasured_cells_empty(zoo_runs, tmp_path):
    out, _, csv_file = table(dict(zoo_runs, root=tmp_path / 'nothing'),
                             tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    (row, ) = csv.DictReader(io.StringIO(csv_file.read_text()))
    measured = COLUMNS[3:9]
    assert [row[c] for c in measured] == [''] * len(measured)
    max_iters = Config.fromfile(str(DEMO)).train_cfg.max_iters
    assert row['Backbone'] == 'R-18'
    assert row['Lr schd'] == f'{max_iters} iters'


def test_benchmark_table_names_a_corrupt_log(zoo_runs, tmp_path):
    root = tmp_path / 'work_dirs'
    shutil.copytree(zoo_runs['root'], root)
    (scalars, ) = (root / BASELINE_NAME).glob('*/vis_data/scalars.json')
    scalars.write_text(scalars.read_text() + '{"coco/segm_mAP": \n')
    out, _, _ = table(dict(zoo_runs, root=root), tmp_path)
    assert out.returncode == 1
    count = len(scalars.read_text().splitlines())
    assert f'{scalars}:{count}: not JSON' in out.stderr


def test_benchmark_table_names_a_model_without_baseline(zoo_runs, tmp_path):
    metafile = tmp_path / 'metafile.yml'
    metafile.write_text(yaml.safe_dump(dict(Models=[dict(
        Name='no-baseline', Config=str(DEMO), Metadata={})])))
    out, _, _ = table(dict(zoo_runs, metafile=metafile), tmp_path)
    assert out.returncode == 1
    assert 'Models[0] (no-baseline) has no Metadata: Baseline Config' in (
        out.stderr)
