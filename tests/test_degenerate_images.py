"""Images upstream implementations trip on: training and inference run, and
every loss stays finite."""
import numpy as np
import pytest
import torch
from helpers import build_model, predict, tiny_model_cfg, train_step_losses
from mmdet.structures import DetDataSample
from mmdet.structures.mask import BitmapMasks
from mmengine.structures import InstanceData

SIZE = 64
NUM_CLASSES = 3
MANY = 120  # instances in the crowded image
TRAIN_STEPS = 2
LR = 1e-3


def instances(masks: np.ndarray, labels: list,
              boxes: np.ndarray = None) -> InstanceData:
    """Instances from ``(n, SIZE, SIZE)`` masks; boxes from the masks unless
    given (a zero-area mask keeps its given box, as after augmentation)."""
    if boxes is None:
        boxes = []
        for mask in masks:
            ys, xs = np.nonzero(mask)
            boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    return InstanceData(
        bboxes=torch.tensor(np.asarray(boxes), dtype=torch.float32).reshape(
            -1, 4),
        labels=torch.tensor(labels, dtype=torch.long),
        masks=BitmapMasks(masks.astype(np.uint8), SIZE, SIZE))


def rectangles(corners: list) -> np.ndarray:
    masks = np.zeros((len(corners), SIZE, SIZE), np.uint8)
    for mask, (x0, y0, x1, y1) in zip(masks, corners):
        mask[y0:y1, x0:x1] = 1
    return masks


def no_instance() -> InstanceData:
    return instances(np.zeros((0, SIZE, SIZE)), [], np.zeros((0, 4)))


def zero_area_masks() -> InstanceData:
    return instances(np.zeros((2, SIZE, SIZE)), [0, 1],
                     np.array([[4, 4, 30, 30], [20, 10, 60, 50]]))


def tiny_objects() -> InstanceData:
    return instances(rectangles([(5, 5, 6, 6), (30, 30, 32, 32),
                                 (50, 10, 52, 11)]), [0, 1, 2])


def whole_image() -> InstanceData:
    return instances(rectangles([(0, 0, SIZE, SIZE)]), [2])


def crowded() -> InstanceData:
    rng = np.random.default_rng(0)
    corners = [(x, y, x + w, y + h) for x, y, w, h in zip(
        rng.integers(0, SIZE - 8, MANY), rng.integers(0, SIZE - 8, MANY),
        rng.integers(2, 8, MANY), rng.integers(2, 8, MANY))]
    return instances(rectangles(corners),
                     (np.arange(MANY) % NUM_CLASSES).tolist())


CASES = dict(no_instance=no_instance, zero_area_masks=zero_area_masks,
             tiny_objects=tiny_objects, whole_image=whole_image,
             crowded=crowded)


def batch_of(gt: InstanceData, seed: int = 0) -> dict:
    """One image (noise with each instance painted) and its ground truth."""
    rng = np.random.default_rng(seed)
    img = rng.integers(60, 200, (SIZE, SIZE, 3)).astype(np.uint8)
    for k, mask in enumerate(gt.masks.masks):
        img[mask.astype(bool)] = (40 * (k % 5), 255 - 30 * (k % 7), 90)
    sample = DetDataSample(metainfo=dict(
        img_shape=(SIZE, SIZE), ori_shape=(SIZE, SIZE),
        scale_factor=(1.0, 1.0), img_id=0))
    sample.gt_instances = gt
    return dict(inputs=[torch.from_numpy(img).permute(2, 0, 1).contiguous()],
                data_samples=[sample])


@pytest.fixture(scope='module')
def model():
    cfg = tiny_model_cfg(num_classes=NUM_CLASSES)
    cfg.model.train_cfg.rpn.sampler.num = 64
    cfg.model.train_cfg.rcnn.sampler.num = 64
    return build_model(cfg)


@pytest.mark.parametrize('case', sorted(CASES))
def test_trains_and_predicts_with_finite_losses(model, case):
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    for step in range(TRAIN_STEPS):
        losses = train_step_losses(model, batch_of(CASES[case](), step))
        total, log = model.parse_losses(losses)
        assert torch.isfinite(total), (case, log)
        assert all(np.isfinite(float(v)) for v in log.values()), (case, log)
        optimizer.zero_grad()
        total.backward()
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        assert all(torch.isfinite(g).all() for g in grads), case
        optimizer.step()
    model.eval()
    (pred, ) = predict(model, batch_of(CASES[case]()))
    assert len(pred.mask_ious) == len(pred.scores) == len(pred.masks)
    assert torch.isfinite(pred.mask_scores).all()
    assert ((pred.mask_ious >= 0) & (pred.mask_ious <= 1)).all()
