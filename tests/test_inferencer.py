"""mmdet's ``DetInferencer`` and :class:`ms_rcnn_mm.apis.DetInferencer` on
the shipped configs, with checkpoints of random weights; model names of the
package's metafile resolve to the package's classes."""
import copy
import json

import cv2
import numpy as np
import pytest
import torch
import yaml
from helpers import REPO, build_model, random_shapes, render, tiny_model_cfg
from mmdet.apis import DetInferencer as MMDetInferencer
from mmdet.apis import inference_detector, init_detector
from mmengine.config import Config

from ms_rcnn_mm.apis import DetInferencer, scored_by_mask
from ms_rcnn_mm.models import MaskScoringRoIHead

DEMO = REPO / 'configs' / 'demo' / 'ms-rcnn_r18-w32_fpn_synthetic.py'
ZOO = REPO / 'configs' / 'ms-rcnn' / 'ms-rcnn-mm_r50_fpn_1x_coco.py'
METAFILE = REPO / 'configs' / 'ms-rcnn' / 'metafile.yml'
CLASSES = ('circle', 'triangle', 'square', 'star')
SIZE = 160


def save_checkpoint(cfg: Config, path) -> str:
    """A checkpoint of ``cfg``'s model at random weights, with its classes
    (what mmengine's CheckpointHook writes, less the training state)."""
    torch.save(dict(state_dict=build_model(cfg).state_dict(),
                    meta=dict(dataset_meta=dict(classes=CLASSES))), path)
    return str(path)


@pytest.fixture(scope='module')
def image(tmp_path_factory):
    """A synthetic photograph of 4 shapes, as a PNG file."""
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp('images') / 'shapes.png'
    bgr = render(random_shapes(rng, SIZE, 4, len(CLASSES)), SIZE, rng)[
        ..., ::-1]
    cv2.imwrite(str(path), bgr)
    return str(path)


def zoo_config() -> Config:
    """The R-50 zoo config (its pipeline, visualiser and test settings)
    with the tiny model of the other tests and 4 classes."""
    cfg = Config.fromfile(str(ZOO))
    cfg.model = tiny_model_cfg(num_classes=len(CLASSES)).model
    return cfg


@pytest.fixture(scope='module')
def models(tmp_path_factory):
    """``name: (config, checkpoint)`` of the demo config (by path) and of a
    zoo config (a Config, its model shrunk)."""
    tmp = tmp_path_factory.mktemp('checkpoints')
    demo = Config.fromfile(str(DEMO))
    return dict(
        demo=(str(DEMO), save_checkpoint(demo, tmp / 'demo.pth')),
        zoo=(zoo_config(), save_checkpoint(zoo_config(), tmp / 'zoo.pth')))


@pytest.mark.parametrize('name', ['demo', 'zoo'])
def test_mmdet_inferencer_predicts_what_the_test_pipeline_gives(
        models, image, name):
    """mmdet's inferencer runs the config and reads the image as its test
    pipeline does: its predictions are those of ``inference_detector``.

    Catches a test pipeline whose loader mmdet does not recognise (it
    raised ``LoadImageFromFile is not found``) and an inferencer pipeline
    that preprocesses differently from the dataset's."""
    config, weights = models[name]
    inferencer = MMDetInferencer(
        model=copy.deepcopy(config), weights=weights, device='cpu',
        show_progress=False)
    (pred, ) = inferencer(image)['predictions']
    reference = inference_detector(
        init_detector(copy.deepcopy(config), weights, device='cpu'),
        image).pred_instances
    assert len(pred['labels']) == len(reference) > 0
    assert pred['labels'] == reference.labels.tolist()
    np.testing.assert_allclose(pred['scores'], reference.scores.numpy(),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(pred['bboxes'], reference.bboxes.numpy(),
                               rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize('name', ['demo', 'zoo'])
def test_our_inferencer_returns_and_saves_the_mask_scores(
        models, image, name, tmp_path):
    """Each prediction (returned, and in ``preds/<image>.json``) holds the
    model's ``mask_scores``, ``mask_ious`` and ``maskness`` beside mmdet's
    fields.

    Catches a field left out of the dict or of the JSON file, and values
    that are not the model's own."""
    config, weights = models[name]
    inferencer = DetInferencer(
        model=copy.deepcopy(config), weights=weights, device='cpu',
        show_progress=False)
    (pred, ) = inferencer(image, out_dir=str(tmp_path),
                          no_save_pred=False)['predictions']
    (sample, ) = inferencer(image, return_datasamples=True)['predictions']
    instances = sample.pred_instances
    assert len(instances) > 0
    for field in ('scores', 'mask_scores', 'mask_ious', 'maskness'):
        np.testing.assert_allclose(pred[field], instances[field].numpy(),
                                   rtol=1e-6, err_msg=field)
    saved = json.loads((tmp_path / 'preds' / 'shapes.json').read_text())
    assert saved == pred
    assert len(saved['masks']) == len(saved['mask_scores'])


def test_drawn_masks_are_kept_and_labelled_by_mask_score(models, image):
    """At a threshold between the best mask score and the best cls score,
    our inferencer draws nothing (the image comes back unchanged) while
    mmdet's, thresholding the cls score, draws.

    Catches drawing, or thresholding, by the classification score."""
    config, weights = models['demo']
    ours = DetInferencer(model=config, weights=weights, device='cpu',
                         show_progress=False)
    (sample, ) = ours(image, return_datasamples=True)['predictions']
    instances = sample.pred_instances
    best_mask, best_cls = (float(instances.mask_scores.max()),
                           float(instances.scores.max()))
    assert best_mask < best_cls
    thr = (best_mask + best_cls) / 2
    original = cv2.imread(image)[..., ::-1]
    (drawn_ours, ) = ours(image, return_vis=True,
                          pred_score_thr=thr)['visualization']
    theirs = MMDetInferencer(model=config, weights=weights, device='cpu',
                             show_progress=False)
    (drawn_theirs, ) = theirs(image, return_vis=True,
                              pred_score_thr=thr)['visualization']
    assert np.array_equal(drawn_ours, original)
    assert not np.array_equal(drawn_theirs, original)


def test_scored_by_mask_leaves_the_prediction_alone(models, image):
    """The sample drawn carries the mask scores as ``scores``; the
    prediction returned keeps its classification scores.

    Catches writing the mask scores into the model's prediction."""
    config, weights = models['demo']
    inferencer = DetInferencer(model=config, weights=weights, device='cpu',
                               show_progress=False)
    (sample, ) = inferencer(image, return_datasamples=True)['predictions']
    cls_scores = sample.pred_instances.scores.clone()
    drawn = scored_by_mask(sample)
    assert torch.equal(drawn.pred_instances.scores,
                       sample.pred_instances.mask_scores)
    assert torch.equal(sample.pred_instances.scores, cls_scores)
    assert not torch.equal(cls_scores, sample.pred_instances.mask_scores)


def metafile_names():
    return [m['Name'] for m in yaml.safe_load(METAFILE.read_text())['Models']]


@pytest.mark.parametrize('inferencer', [MMDetInferencer, DetInferencer],
                         ids=['mmdet', 'ms_rcnn_mm'])
def test_metafile_name_builds_the_package_model(inferencer):
    """A model name of the package's metafile, in the ``ms_rcnn_mm`` scope,
    builds the package's classes from the package's config (no weights:
    the metafile has none).

    Catches a name that resolves to mmdet's built-in model, and a scope
    mmengine's model lookup does not know."""
    name = 'ms-rcnn-mm_r50_fpn_1x_coco'
    assert name in metafile_names()
    built = inferencer(model=name, scope='ms_rcnn_mm', device='cpu',
                       show_progress=False)
    assert type(built.model.roi_head) is MaskScoringRoIHead
    assert built.cfg.model.roi_head.type == 'ms_rcnn_mm.MaskScoringRoIHead'
