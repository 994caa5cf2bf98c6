"""Export a Mask Scoring R-CNN to ONNX and check the ONNX model, run by
onnxruntime, against the PyTorch model's ``predict`` on the same input."""
import math
from typing import Dict, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from mmcv.transforms import Compose
from mmdet.models.roi_heads.mask_heads.fcn_mask_head import _do_paste_mask
from mmdet.structures import DetDataSample
from mmengine.config import Config
from mmengine.structures import InstanceData
from torch import Tensor, nn

from .onnx_model import OUTPUT_NAMES, ONNXMaskScoringRCNN
from .onnx_ops import OPSET

#: largest differences accepted between onnxruntime and PyTorch, per
#: output (pixels for boxes), and the smallest IoU of two binary masks
TOLERANCES = dict(boxes=0.01, scores=1e-4, mask_ious=1e-4,
                  mask_scores=1e-4)
MIN_MASK_IOU = 0.99
#: pipeline steps that need annotations, dropped to preprocess an image
ANNOTATION_STEPS = ('LoadAnnotations', )


def export(model: nn.Module, shape: Tuple[int, int], path: str) -> None:
    """Write the ONNX graph of ``model`` for ``(1, 3, *shape)`` inputs, with
    a dynamic number of detections, to ``path``."""
    wrapper = ONNXMaskScoringRCNN(model.eval()).eval()
    example = torch.zeros(1, 3, *shape)
    with torch.no_grad():
        torch.onnx.export(
            wrapper, (example, ), path, dynamo=False, opset_version=OPSET,
            input_names=['inputs'], output_names=list(OUTPUT_NAMES),
            dynamic_axes={name: {0: 'num_dets'} for name in OUTPUT_NAMES})


def default_shape(cfg: Config) -> Tuple[int, int]:
    """``(H, W)`` of the test pipeline's ``Resize`` scale, landscape, padded
    to the data preprocessor's ``pad_size_divisor``."""
    resize = [step for step in cfg.test_dataloader.dataset.pipeline
              if step['type'] == 'Resize']
    if not resize:
        raise ValueError('the test pipeline has no Resize: pass --shape H W')
    width, height = resize[0]['scale']
    divisor = cfg.model.data_preprocessor.get('pad_size_divisor', 1)
    return tuple(math.ceil(side / divisor) * divisor
                 for side in (min(width, height), max(width, height)))


def preprocess(model: nn.Module, cfg: Config, image: str,
               shape: Tuple[int, int]) -> Tensor:
    """``image`` through the test pipeline (without its annotation steps)
    and the model's data preprocessor, zero-padded (as a batch pads) to
    ``shape``: the ``(1, 3, *shape)`` input of both models.

    Raises:
        ValueError: the preprocessed image is larger than ``shape``.
    """
    pipeline = Compose([
        step for step in cfg.test_dataloader.dataset.pipeline
        if step['type'] not in ANNOTATION_STEPS
    ])
    data = pipeline(dict(img_path=image, img_id=0))
    inputs = model.data_preprocessor(
        dict(inputs=[data['inputs']], data_samples=[data['data_samples']]),
        False)['inputs']
    height, width = inputs.shape[-2:]
    if height > shape[0] or width > shape[1]:
        raise ValueError(
            f'{image}: {height}x{width} after the test pipeline, larger '
            f'than the export shape {shape[0]}x{shape[1]}; pass --shape')
    return F.pad(inputs, (0, shape[1] - width, 0, shape[0] - height))


def torch_predictions(model: nn.Module, inputs: Tensor) -> InstanceData:
    """``model.predict`` of ``inputs`` in their own pixel frame (the image
    is the whole input, scale 1), as the ONNX graph computes it."""
    shape = tuple(inputs.shape[-2:])
    sample = DetDataSample(metainfo=dict(
        img_shape=shape, ori_shape=shape, pad_shape=shape,
        batch_input_shape=shape, scale_factor=(1.0, 1.0)))
    with torch.no_grad():
        return model.eval().predict(inputs, [sample],
                                    rescale=False)[0].pred_instances


def onnx_predictions(path: str, inputs: Tensor) -> Dict[str, np.ndarray]:
    """The ONNX model at ``path`` on ``inputs``, by onnxruntime's CPU
    provider: :data:`OUTPUT_NAMES` to arrays."""
    import onnxruntime
    session = onnxruntime.InferenceSession(
        path, providers=['CPUExecutionProvider'])
    outputs = session.run(None, {'inputs': inputs.numpy()})
    return dict(zip(OUTPUT_NAMES, outputs))


def paste(masks: np.ndarray, boxes: np.ndarray, shape: Tuple[int, int],
          thr: float) -> Tensor:
    """Binary ``(k, H, W)`` masks from the ``(k, 28, 28)`` probabilities, as
    mmdet's ``FCNMaskHead`` pastes and binarises them."""
    if len(masks) == 0:
        return torch.zeros((0, *shape), dtype=torch.bool)
    pasted, _ = _do_paste_mask(
        torch.from_numpy(masks)[:, None], torch.from_numpy(boxes), *shape,
        skip_empty=False)
    return pasted >= thr


def mask_ious(a: Tensor, b: Tensor) -> Tensor:
    """IoU of each pair of binary masks ``(k, H, W)`` (1 for two empty
    masks)."""
    inter = (a & b).flatten(1).sum(1).double()
    union = (a | b).flatten(1).sum(1).double()
    return torch.where(union > 0, inter / union.clamp(min=1),
                       torch.ones_like(union))


def differences(reference: InstanceData, onnx: Dict[str, np.ndarray],
                mask_thr: float) -> Dict[str, float]:
    """Largest differences of each output between the two models, detection
    by detection (the same order), and the smallest IoU between their
    binary masks.

    Raises:
        ValueError: the two models detect a different number of objects,
            or give another label to one.
    """
    count, onnx_count = len(reference), len(onnx['boxes'])
    if count != onnx_count:
        raise ValueError(f'PyTorch detects {count} objects, the ONNX model '
                         f'{onnx_count}')
    labels = reference.labels.numpy()
    if not np.array_equal(labels, onnx['labels']):
        first = int(np.flatnonzero(labels != onnx['labels'])[0])
        raise ValueError(
            f'detection {first}: label {labels[first]} in PyTorch, '
            f'{onnx["labels"][first]} in the ONNX model')
    result = dict(detections=float(count))
    fields = dict(boxes='bboxes', scores='scores', mask_ious='mask_ious',
                  mask_scores='mask_scores')
    for name, field in fields.items():
        diff = np.abs(reference[field].numpy() - onnx[name])
        result[name] = float(diff.max()) if count else 0.0
    shape = tuple(reference.masks.shape[-2:])
    ious = mask_ious(reference.masks.bool(),
                     paste(onnx['masks'], onnx['boxes'], shape, mask_thr))
    result['mask_iou'] = float(ious.min()) if count else 1.0
    return result


def failures(diffs: Dict[str, float]) -> Sequence[str]:
    """What in ``diffs`` is outside :data:`TOLERANCES` and
    :data:`MIN_MASK_IOU`, one line each."""
    lines = [f'{name}: {diffs[name]:.3g} > {limit:g}'
             for name, limit in TOLERANCES.items() if diffs[name] > limit]
    if diffs['mask_iou'] < MIN_MASK_IOU:
        lines.append(f'mask IoU: {diffs["mask_iou"]:.4f} < {MIN_MASK_IOU}')
    return lines
