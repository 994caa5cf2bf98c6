"""The mask head of a config in mmdet's contiguous layout and channels-last
(:class:`ms_rcnn_mm.models.ChannelsLastFCNMaskHead`), timed on the same
weights and RoIs for one training step each (forward and backward), in
alternation so that both see the same drift of the machine."""
import statistics
import time
from typing import Dict, List

import torch
from mmdet.registry import MODELS
from mmengine.config import Config
from torch import Tensor, nn

#: the two layouts and the mask head type that computes in each
LAYOUTS = {'contiguous': 'FCNMaskHead',
           'channels_last': 'ms_rcnn_mm.ChannelsLastFCNMaskHead'}


def build_mask_heads(config: str) -> Dict[str, nn.Module]:
    """The config's mask head once per layout, with the same weights."""
    import ms_rcnn_mm  # noqa: F401  (registers the package's heads)
    head_cfg = Config.fromfile(config).model.roi_head.mask_head
    heads = {name: MODELS.build(dict(head_cfg, type=head_type))
             for name, head_type in LAYOUTS.items()}
    heads['contiguous'].init_weights()
    heads['channels_last'].load_state_dict(heads['contiguous'].state_dict())
    return heads


def train_step(head: nn.Module, feats: Tensor, grad: Tensor) -> Tensor:
    """The head's logits on ``feats``, after back-propagating ``grad``
    through them into the input and the weights."""
    x = feats.clone().requires_grad_()
    logits = head(x)
    logits.backward(grad)
    head.zero_grad()
    return logits.detach()


def measure_layouts(heads: Dict[str, nn.Module], rois: int,
                    repeats: int = 5, seed: int = 0) -> dict:
    """Median milliseconds of a training step per layout, after one warm-up.

    Returns:
        dict: ``contiguous_ms``, ``channels_last_ms``, ``ratio``
        (channels-last over contiguous, of the medians), ``paired_ratio``
        (median of the per-round ratios) and ``max_abs_diff`` (of the two
        layouts' logits).
    """
    head = heads['contiguous']
    generator = torch.Generator().manual_seed(seed)
    side = head.roi_feat_size[0]
    feats = torch.randn(rois, head.in_channels, side, side,
                        generator=generator)
    grad = torch.randn(rois, head.num_classes, 2 * side, 2 * side,
                       generator=generator)
    logits = {name: train_step(h, feats, grad) for name, h in heads.items()}
    runs: Dict[str, List[float]] = {name: [] for name in heads}
    for _ in range(repeats):
        for name, h in heads.items():
            start = time.perf_counter()
            train_step(h, feats, grad)
            runs[name].append(time.perf_counter() - start)
    contiguous, channels_last = (statistics.median(runs[k]) * 1e3
                                 for k in LAYOUTS)
    return dict(
        contiguous_ms=contiguous, channels_last_ms=channels_last,
        ratio=channels_last / contiguous,
        paired_ratio=statistics.median(
            c / b for b, c in zip(runs['contiguous'], runs['channels_last'])),
        max_abs_diff=float((logits['channels_last'] -
                            logits['contiguous']).abs().max()))
