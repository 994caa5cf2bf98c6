"""tools/demo/image_demo.py: mmdet 3.x's demo arguments, through
:class:`ms_rcnn_mm.apis.DetInferencer`."""
import json

import cv2
import numpy as np
import pytest
import torch
from helpers import REPO, build_model, load_tool, random_shapes, render
from mmengine.config import Config

DEMO_CONFIG = REPO / 'configs' / 'demo' / 'ms-rcnn_r18-w32_fpn_synthetic.py'
CLASSES = ('circle', 'triangle', 'square', 'star')
SIZE = 160


@pytest.fixture(scope='module')
def inputs(tmp_path_factory):
    """A folder of two synthetic images and a demo-config checkpoint of
    random weights."""
    tmp = tmp_path_factory.mktemp('image_demo')
    rng = np.random.default_rng(0)
    folder = tmp / 'images'
    folder.mkdir()
    for name in ('a.png', 'b.png'):
        img = render(random_shapes(rng, SIZE, 4, len(CLASSES)), SIZE, rng)
        cv2.imwrite(str(folder / name), img[..., ::-1])
    weights = tmp / 'demo.pth'
    torch.save(dict(
        state_dict=build_model(Config.fromfile(str(DEMO_CONFIG))).state_dict(),
        meta=dict(dataset_meta=dict(classes=CLASSES))), weights)
    return folder, weights


def test_folder_in_drawings_and_predictions_out(inputs, tmp_path, capsys):
    """mmdet's arguments (a folder, the config, ``--weights``,
    ``--out-dir``, ``--batch-size``, no ``--device``: the CPU here): one
    drawing of the image's size and one JSON file with the mask scores per
    image, equal to what the tool returns.

    Catches arguments not passed to the inferencer (a batch size, a
    threshold, the output folder) and a CUDA device by default on a machine
    without one."""
    folder, weights = inputs
    tool = load_tool('demo/image_demo.py')
    out = tmp_path / 'outputs'
    results = tool.main([str(folder), str(DEMO_CONFIG), '--weights',
                         str(weights), '--out-dir', str(out),
                         '--batch-size', '2', '--pred-score-thr', '0'])
    assert f'results have been saved at {out}' in capsys.readouterr().out
    predictions = results['predictions']
    assert len(predictions) == 2
    for name, pred in zip(('a', 'b'), predictions):
        saved = json.loads((out / 'preds' / f'{name}.json').read_text())
        assert saved == pred
        assert len(saved['mask_scores']) == len(saved['mask_ious']) == len(
            saved['labels']) > 0
        drawn = cv2.imread(str(out / 'vis' / f'{name}.png'))
        assert drawn.shape == (SIZE, SIZE, 3)
        # --pred-score-thr 0: every mask is drawn over the image
        assert not np.array_equal(drawn, cv2.imread(str(folder /
                                                        f'{name}.png')))


def test_no_saving_writes_nothing(inputs, tmp_path):
    """``--no-save-vis --no-save-pred``: predictions returned, no file."""
    folder, weights = inputs
    out = tmp_path / 'outputs'
    results = load_tool('demo/image_demo.py').main([
        str(folder / 'a.png'), str(DEMO_CONFIG), '--weights', str(weights),
        '--out-dir', str(out), '--no-save-vis', '--no-save-pred'])
    assert len(results['predictions']) == 1
    assert not out.exists()


def test_neither_model_nor_weights_is_an_error(capsys):
    with pytest.raises(SystemExit):
        load_tool('demo/image_demo.py').parse_args(['image.png'])
    assert 'give a config or model name, --weights, or both' in \
        capsys.readouterr().err
