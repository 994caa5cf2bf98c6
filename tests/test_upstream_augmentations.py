"""mmdet issue 11527: MS R-CNN training with RandAugment, RandomCrop,
CopyPaste or large-scale jitter crashes in mmdet's mask-scoring head.

Each augmentation runs on a hand-made image whose objects it pushes out of
the frame, crops away or occludes; the result holds an instance whose box
has no width or height and whose mask is empty. mmdet 3.3.0's built-in MS
R-CNN fails on that batch: ``IndexError`` in
``MaskIoUHead._get_area_ratio`` where the box lies on the right or bottom
border, a NaN box loss where it lies on the left or top one. This package's
model drops such instances and trains through a few iterations with finite
losses.
"""
import copy

import numpy as np
import pytest
import torch
from helpers import build_model, tiny_model_cfg, train_step_losses
from mmdet.registry import TRANSFORMS
from mmdet.structures.bbox import HorizontalBoxes
from mmdet.structures.mask import BitmapMasks, PolygonMasks
from mmengine.dataset import pseudo_collate

from ms_rcnn_mm import launch
from ms_rcnn_mm.models.mask_scoring_rcnn import has_pixels, visible_instances

SIZE = 128
NUM_CLASSES = 3
TRAIN_STEPS = 3
LR = 1e-3
SEED = 0
#: RandAugment limited to one translation of 70% of the width, to the right
TRANSLATE = [[dict(type='TranslateX', prob=1.0, min_mag=0.7, max_mag=0.7,
                   reversal_prob=1.0)]]
CROP = (SIZE // 2, SIZE // 2)
AUGMENTATIONS = {
    'RandAugment': [dict(type='RandAugment', aug_space=TRANSLATE,
                         aug_num=1)],
    'RandomCrop': [dict(type='RandomCrop', crop_size=CROP,
                        recompute_bbox=True)],
    'LSJ': [dict(type='RandomResize', scale=(SIZE, SIZE),
                 ratio_range=(0.8, 1.25), keep_ratio=True),
            dict(type='RandomCrop', crop_size=(SIZE, SIZE),
                 recompute_bbox=True, allow_negative_crop=True),
            dict(type='Pad', size=(SIZE, SIZE))],
    'CopyPaste': [dict(type='CopyPaste', selected=False)],
}


def rect_masks(corners) -> np.ndarray:
    masks = np.zeros((len(corners), SIZE, SIZE), np.uint8)
    for mask, (x0, y0, x1, y1) in zip(masks, corners):
        mask[y0:y1, x0:x1] = 1
    return masks


def results(boxes, masks) -> dict:
    """A loaded image with its annotations, as LoadAnnotations gives them."""
    rng = np.random.default_rng(SEED)
    img = rng.integers(60, 200, (SIZE, SIZE, 3)).astype(np.uint8)
    for k, mask in enumerate(masks):
        img[mask.astype(bool)] = (50 + 60 * k, 220 - 50 * k, 90)
    return dict(
        img=img, img_shape=(SIZE, SIZE), ori_shape=(SIZE, SIZE), img_id=0,
        img_path='synthetic.png', scale_factor=(1.0, 1.0),
        gt_bboxes=HorizontalBoxes(np.asarray(boxes, np.float32)),
        gt_bboxes_labels=np.arange(len(boxes)) % NUM_CLASSES,
        gt_ignore_flags=np.zeros(len(boxes), bool),
        gt_masks=BitmapMasks(masks, SIZE, SIZE))


def scene(name: str) -> dict:
    """The input on which ``name`` leaves an instance without area."""
    if name in ('RandomCrop', 'LSJ'):
        # an imperfect, hand-made box: the mask is only its top-left corner,
        # which a crop that does not start at the origin misses
        masks = rect_masks([(20, 20, 60, 60), (0, 0, 4, 4)])
        return results([[20, 20, 60, 60], [0, 0, SIZE, SIZE]], masks)
    corners = [(20, 20, 60, 60), (70, 30, 110, 90)]
    data = results(corners, rect_masks(corners))
    if name == 'CopyPaste':
        # the small object near the origin is pasted over entirely
        dst = [(2, 2, 8, 8), (70, 30, 110, 90)]
        data = results(dst, rect_masks(dst))
        src = [(0, 0, 40, 40)]
        data['mix_results'] = [results(src, rect_masks(src))]
    return data


def augmented_batch(name: str) -> dict:
    np.random.seed(SEED)
    data = scene(name)
    for cfg in AUGMENTATIONS[name] + [dict(type='PackDetInputs')]:
        data = TRANSFORMS.build(cfg)(data)
    return pseudo_collate([data, copy.deepcopy(data)])


def upstream_cfg():
    """The tiny model with mmdet 3.3.0's own MS R-CNN classes."""
    cfg = tiny_model_cfg(num_classes=NUM_CLASSES)
    cfg.model.type = 'MaskScoringRCNN'
    cfg.model.roi_head.type = 'MaskScoringRoIHead'
    cfg.model.roi_head.mask_iou_head.type = 'MaskIoUHead'
    return cfg


@pytest.mark.parametrize('name', sorted(AUGMENTATIONS))
def test_augmentation_leaves_an_instance_without_area(name):
    gt = augmented_batch(name)['data_samples'][0].gt_instances
    boxes = gt.bboxes.tensor
    sides = (boxes[:, 2:] - boxes[:, :2]).min(1).values
    assert (sides <= 0).any(), (name, boxes)
    assert (np.asarray(gt.masks.areas)[sides.numpy() <= 0] == 0).all()
    assert 0 < len(visible_instances(gt)) < len(gt)


@pytest.mark.parametrize('name', sorted(AUGMENTATIONS))
def test_mmdet_ms_rcnn_fails(name):
    """A box clipped to the right or bottom border crashes mmdet's MaskIoU
    targets; one at the left or top border makes box regression NaN (and
    the weights NaN after the step)."""
    model = build_model(upstream_cfg(), seed=SEED)
    torch.manual_seed(SEED)
    batch = augmented_batch(name)
    if name == 'RandAugment':  # translated to the right
        with pytest.raises(IndexError, match='index 0 is out of bounds') \
                as err:
            train_step_losses(model, batch)
        assert err.traceback[-1].name == '_get_area_ratio'
    else:
        losses = train_step_losses(model, batch)
        assert torch.isnan(losses['loss_bbox'])


@pytest.mark.parametrize('name', sorted(AUGMENTATIONS))
def test_ours_trains_through(name):
    model = build_model(tiny_model_cfg(num_classes=NUM_CLASSES), seed=SEED)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    for _ in range(TRAIN_STEPS):
        total, log = model.parse_losses(
            train_step_losses(model, augmented_batch(name)))
        assert all(np.isfinite(float(v)) for v in log.values()), log
        assert float(log['loss_mask_iou']) >= 0
        optimizer.zero_grad()
        total.backward()
        optimizer.step()


def test_amp_without_cuda_stops_with_a_message(monkeypatch):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    with pytest.raises(SystemExit) as err:
        launch.run_mmdet_tool('train.py', ['any_config.py', '--amp'])
    message = str(err.value.code)
    assert message.startswith('error: --amp needs a CUDA device')
    assert 'Run without --amp' in message


def test_has_pixels_matches_mask_areas():
    """The per-batch emptiness check agrees with ``areas > 0`` for every
    mask type, including empty and single-pixel masks."""
    rng = np.random.default_rng(SEED)
    bitmaps = (rng.random((6, 9, 12)) < 0.02).astype(np.uint8)
    bitmaps[0] = 0
    bitmaps[1] = 0
    bitmaps[1, 8, 11] = 1  # one pixel in the last corner
    bitmap_masks = BitmapMasks(bitmaps, 9, 12)
    expected = np.asarray(bitmap_masks.areas) > 0
    assert expected.tolist()[:2] == [False, True]
    for masks in (bitmap_masks, torch.from_numpy(bitmaps).bool(),
                  torch.from_numpy(bitmaps).float()):
        assert has_pixels(masks).tolist() == expected.tolist()
    polygons = PolygonMasks(
        [[np.array([0., 0., 4., 0., 4., 3.])],  # a triangle
         [np.array([1., 1., 5., 1., 9., 1.])]],  # collinear: no area
        9, 12)
    assert has_pixels(polygons).tolist() == [True, False]
    assert has_pixels(torch.zeros((2, 0, 5))).tolist() == [False, False]
