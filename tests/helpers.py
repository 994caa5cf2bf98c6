"""Tiny models and synthetic batches shared by the tests."""
import copy
import importlib.util
from pathlib import Path
from typing import List, Optional

import numpy as np
import torch
from mmdet.registry import MODELS
from mmdet.structures import DetDataSample
from mmdet.structures.mask import BitmapMasks
from mmdet.utils import register_all_modules
from mmengine.config import Config
from mmengine.structures import InstanceData

import ms_rcnn_mm  # noqa: F401  (registers the package's modules)

REPO = Path(__file__).resolve().parents[1]
R50_CONFIG = REPO / 'configs' / 'ms-rcnn' / 'ms-rcnn-mm_r50_fpn_1x_coco.py'
#: colours of the synthetic classes (RGB); class c draws with COLOURS[c]
COLOURS = np.array([[230, 60, 60], [60, 200, 60], [60, 90, 230],
                    [220, 200, 40]], dtype=np.uint8)

register_all_modules(init_default_scope=True)


def load_tool(relative_path: str):
    """The script ``tools/<relative_path>`` as a module (tools/ is no
    package)."""
    path = REPO / 'tools' / relative_path
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_model_cfg(num_classes: int = 3, width: int = 32,
                   base_channels: int = 16) -> Config:
    """The shipped R50 config shrunk to a ResNet-18 of ``base_channels``
    with ``width``-channel FPN and heads, no pretrained init."""
    cfg = Config.fromfile(str(R50_CONFIG))
    model = cfg.model
    stage_channels = [base_channels * 2**i for i in range(4)]
    model.backbone.update(
        depth=18, base_channels=base_channels, init_cfg=None,
        frozen_stages=-1, norm_eval=False)
    model.neck.update(in_channels=stage_channels, out_channels=width)
    model.rpn_head.update(in_channels=width, feat_channels=width)
    roi = model.roi_head
    roi.bbox_roi_extractor.out_channels = width
    roi.mask_roi_extractor.out_channels = width
    roi.bbox_head.update(
        in_channels=width, fc_out_channels=128, num_classes=num_classes)
    roi.mask_head.update(
        in_channels=width, conv_out_channels=width, num_classes=num_classes)
    roi.mask_iou_head.update(
        in_channels=width, conv_out_channels=width, fc_out_channels=128,
        num_classes=num_classes)
    return cfg


def build_model(cfg: Config, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = MODELS.build(cfg.model)
    model.init_weights()
    return model


def random_shapes(rng: np.random.Generator, size: int, num: int,
                  num_classes: int) -> InstanceData:
    """``num`` rectangles (even classes) and ellipses (odd classes)."""
    masks, boxes, labels = [], [], []
    yy, xx = np.mgrid[:size, :size]
    for _ in range(num):
        label = int(rng.integers(num_classes))
        w, h = rng.integers(size // 6, size // 2, 2)
        x0, y0 = rng.integers(0, size - w), rng.integers(0, size - h)
        if label % 2 == 0:
            mask = (xx >= x0) & (xx < x0 + w) & (yy >= y0) & (yy < y0 + h)
        else:
            mask = (((xx + 0.5 - x0 - w / 2) / (w / 2))**2 +
                    ((yy + 0.5 - y0 - h / 2) / (h / 2))**2) <= 1
        ys, xs = np.nonzero(mask)
        masks.append(mask.astype(np.uint8))
        boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
        labels.append(label)
    return InstanceData(
        bboxes=torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        labels=torch.tensor(labels, dtype=torch.long),
        masks=BitmapMasks(
            np.stack(masks) if masks else np.zeros((0, size, size), np.uint8),
            size, size))


def render(instances: InstanceData, size: int,
           rng: np.random.Generator) -> np.ndarray:
    """Noisy grey background with each instance painted in its colour."""
    img = rng.integers(90, 160, (size, size, 3)).astype(np.uint8)
    for mask, label in zip(instances.masks.masks, instances.labels.tolist()):
        img[mask.astype(bool)] = COLOURS[label % len(COLOURS)]
    return img


def synthetic_batch(num_images: int = 2,
                    size: int = 128,
                    num_instances: Optional[List[int]] = None,
                    num_classes: int = 3,
                    seed: int = 0) -> dict:
    """A batch for ``model.data_preprocessor`` (``inputs``, ``data_samples``)
    of synthetic images, with ground truth."""
    rng = np.random.default_rng(seed)
    num_instances = num_instances or [3] * num_images
    inputs, samples = [], []
    for num in num_instances:
        gt = random_shapes(rng, size, num, num_classes)
        img = render(gt, size, rng)
        inputs.append(torch.from_numpy(img).permute(2, 0, 1).contiguous())
        sample = DetDataSample(
            metainfo=dict(
                img_shape=(size, size), ori_shape=(size, size),
                scale_factor=(1.0, 1.0), img_id=len(samples)))
        sample.gt_instances = gt
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def preprocess(model: torch.nn.Module, batch: dict,
               training: bool) -> dict:
    return model.data_preprocessor(batch, training=training)


def predict(model: torch.nn.Module, batch: dict) -> List[InstanceData]:
    """``pred_instances`` of each image (the model writes them into the data
    samples it is given, so each call gets its own copy of the batch)."""
    data = preprocess(model, copy.deepcopy(batch), training=False)
    with torch.no_grad():
        return [s.pred_instances for s in model(**data, mode='predict')]


def train_step_losses(model: torch.nn.Module, batch: dict) -> dict:
    """Losses of one forward in loss mode on ``batch``."""
    return model(**preprocess(model, batch, training=True), mode='loss')
