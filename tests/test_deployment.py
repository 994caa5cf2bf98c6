"""ONNX export (ms_rcnn_mm.deployment, tools/deployment/export_onnx.py):
onnxruntime gives what the PyTorch model predicts, with standard operators
only and a dynamic number of detections."""
import numpy as np
import onnx
import pytest
import torch
from helpers import R50_CONFIG, REPO, build_model, load_tool, tiny_model_cfg
from mmdet.apis import init_detector
from mmengine.config import Config

from ms_rcnn_mm.deployment import check_exportable, verify

DEMO_CONFIG = REPO / 'configs' / 'demo' / 'ms-rcnn_r18-w32_fpn_synthetic.py'
CASCADE_CONFIG = (REPO / 'configs' / 'demo' /
                  'cascade-ms-rcnn_r18-w32_fpn_synthetic.py')
PHOTO = REPO / 'tests' / 'data' / 'fruits_nuts' / 'images' / '0.jpg'
SHAPE = (256, 256)  # the demo's test scale; the photo is 256x192 there
#: keeps some of the random-weight model's detections of the photo (their
#: scores are 0.205-0.226) and none of a blank input's (all 0.2)
SCORE_THR = 0.21


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory):
    """A demo-config checkpoint of random weights (seed 0)."""
    path = tmp_path_factory.mktemp('deploy') / 'demo.pth'
    model = build_model(Config.fromfile(str(DEMO_CONFIG)))
    torch.save(dict(state_dict=model.state_dict(), meta={}), path)
    return path


def export_demo(checkpoint, folder, score_thr=None):
    """The demo model and its ONNX file, exported at :data:`SHAPE` (with
    the detection threshold ``score_thr``, if given)."""
    cfg = Config.fromfile(str(DEMO_CONFIG))
    if score_thr is not None:
        cfg.model.test_cfg.rcnn.score_thr = score_thr
    model = init_detector(cfg, str(checkpoint), device='cpu')
    path = str(folder / 'demo.onnx')
    verify.export(model, SHAPE, path)
    return cfg, model, path


@pytest.fixture(scope='module')
def exported(checkpoint, tmp_path_factory):
    """Exported with the config's thresholds: 100 detections of 4
    classes on the photo."""
    return export_demo(checkpoint, tmp_path_factory.mktemp('onnx'))


@pytest.fixture(scope='module')
def exported_thr(checkpoint, tmp_path_factory):
    """Exported with :data:`SCORE_THR`."""
    return export_demo(checkpoint, tmp_path_factory.mktemp('onnx_thr'),
                       SCORE_THR)


def test_onnx_gives_the_pytorch_predictions(exported):
    """Mutations caught: RoiAlign without half-pixel coordinates, boxes
    pooled from another level, NMS across classes, a wrong label channel
    of the masks or MaskIoUs."""
    cfg, model, path = exported
    inputs = verify.preprocess(model, cfg, str(PHOTO), SHAPE)
    reference = verify.torch_predictions(model, inputs)
    diffs = verify.differences(reference, verify.onnx_predictions(
        path, inputs), cfg.model.test_cfg.rcnn.mask_thr_binary)
    assert diffs['detections'] == cfg.model.test_cfg.rcnn.max_per_img
    assert not verify.failures(diffs), diffs
    assert len(set(reference.labels.tolist())) == 4


def test_number_of_detections_is_dynamic(exported_thr):
    """The graph traced on one input gives another input its own number
    of detections, none included (empty outputs, no error)."""
    cfg, model, path = exported_thr
    photo = verify.preprocess(model, cfg, str(PHOTO), SHAPE)
    counts = []
    for inputs in (photo, torch.zeros_like(photo)):
        outputs = verify.onnx_predictions(path, inputs)
        diffs = verify.differences(verify.torch_predictions(model, inputs),
                                   outputs, 0.5)
        assert not verify.failures(diffs)
        assert {name: out.shape[0] for name, out in outputs.items()} == \
            {name: len(outputs['boxes']) for name in verify.OUTPUT_NAMES}
        counts.append(len(outputs['boxes']))
    assert 0 < counts[0] < cfg.model.test_cfg.rcnn.max_per_img
    assert counts[1] == 0


def test_graph_has_standard_operators_only(exported):
    graph = onnx.load(exported[2]).graph
    assert {node.domain for node in graph.node} <= {''}
    ops = {node.op_type for node in graph.node}
    assert {'RoiAlign', 'NonMaxSuppression'} <= ops
    half_pixel = [
        attr.s for node in graph.node if node.op_type == 'RoiAlign'
        for attr in node.attribute
        if attr.name == 'coordinate_transformation_mode'
    ]
    assert half_pixel and set(half_pixel) == {b'half_pixel'}
    assert [out.name for out in graph.output] == list(verify.OUTPUT_NAMES)


def test_cli_verifies_and_exits_1_outside_tolerance(checkpoint, tmp_path,
                                                    monkeypatch, capsys):
    tool = load_tool('deployment/export_onnx.py')
    out = str(tmp_path / 'demo.onnx')
    argv = [str(DEMO_CONFIG), str(checkpoint), '--out', out, '--verify',
            str(PHOTO)]
    assert tool.main(argv) == 0
    printed = capsys.readouterr().out
    assert '100 detections' in printed and 'smallest mask IoU' in printed

    onnx_predictions = verify.onnx_predictions

    def shifted(path, inputs):
        outputs = onnx_predictions(path, inputs)
        outputs['scores'] = outputs['scores'] + 1e-3
        return outputs

    monkeypatch.setattr(tool.verify, 'onnx_predictions', shifted)
    assert tool.main(argv) == 1
    assert 'outside tolerance: scores: 0.001 > 0.0001' in \
        capsys.readouterr().err


def test_differences_name_what_disagrees(exported):
    cfg, model, path = exported
    inputs = verify.preprocess(model, cfg, str(PHOTO), SHAPE)
    reference = verify.torch_predictions(model, inputs)
    outputs = verify.onnx_predictions(path, inputs)
    fewer = {name: out[1:] for name, out in outputs.items()}
    with pytest.raises(ValueError, match=f'PyTorch detects {len(reference)}'
                       f' objects, the ONNX model {len(reference) - 1}'):
        verify.differences(reference, fewer, 0.5)
    relabelled = dict(outputs, labels=outputs['labels'].copy())
    relabelled['labels'][3] += 1
    with pytest.raises(ValueError, match='detection 3: label'):
        verify.differences(reference, relabelled, 0.5)
    # a mask shifted by a quarter of its box: IoU well below 0.99
    moved = dict(outputs, masks=np.roll(outputs['masks'], 7, axis=2))
    diffs = verify.differences(reference, moved, 0.5)
    assert diffs['mask_iou'] < verify.MIN_MASK_IOU
    assert verify.failures(diffs)[-1].startswith('mask IoU')


def test_too_large_an_image_is_named(exported):
    cfg, model, _ = exported
    with pytest.raises(ValueError, match=r'0\.jpg: 192x256 after the test '
                       r'pipeline, larger than the export shape 128x128'):
        verify.preprocess(model, cfg, str(PHOTO), (128, 128))


def test_default_shape_is_the_padded_test_scale():
    assert verify.default_shape(Config.fromfile(str(R50_CONFIG))) == \
        (800, 1344)
    assert verify.default_shape(Config.fromfile(str(DEMO_CONFIG))) == SHAPE


def test_unsupported_models_are_refused():
    with pytest.raises(TypeError, match='cascade heads do not export'):
        check_exportable(build_model(Config.fromfile(str(CASCADE_CONFIG))))
    cfg = tiny_model_cfg()
    cfg.model.test_cfg.rcnn.nms = dict(type='soft_nms', iou_threshold=0.5)
    with pytest.raises(ValueError, match="rcnn.nms.type='soft_nms'"):
        check_exportable(build_model(cfg))


def test_latency_benchmark_runs_the_three_ways_in_agreement():
    tool = load_tool('analysis_tools/benchmark_onnx.py')
    result = tool.main([str(DEMO_CONFIG), '--shape', '128', '128',
                        '--repeats', '1', '--warmup', '0'])
    assert set(result['medians_ms']) == {
        'pytorch predict', 'pytorch graph', 'onnxruntime'}
    assert all(ms > 0 for ms in result['medians_ms'].values())
    # score threshold 0: every image keeps max_per_img detections
    assert result['differences']['detections'] == 100
    assert not verify.failures(result['differences'])
