"""Multiply-adds of a detector, counted with forward hooks, per component.

Counted layers: convolutions (``nn.Conv2d``, mmcv's deformable convolutions,
whose offset convs are ``nn.Conv2d`` and counted too), transposed
convolutions and fully connected layers: one multiply-add per weight per
output position. Normalisation, activations, pooling, RoIAlign, NMS and the
deformable sampling itself are not counted. Hooks see the model as it really
runs (any mode, data-dependent RoI counts), which a ``torch.jit`` trace of a
two-stage detector does not.

Components are named by module path: ``backbone``, ``neck``, ``rpn_head``
and, under ``roi_head``, each sub-module (``roi_head.bbox_head``,
``roi_head.mask_head``, ``roi_head.mask_iou_head``). Each component also
counts the rows it was called with (images for the backbone, RoIs for the
heads), so heads get a cost per RoI.
"""
from collections import defaultdict
from typing import Dict, Iterator, Tuple

import torch
from mmcv.ops import DeformConv2d, ModulatedDeformConv2d
from torch import Tensor, nn

#: modules whose children are reported separately
SPLIT = ('roi_head', )
#: multiply-adds per giga
GIGA = 1e9
_CONVS = (nn.Conv2d, DeformConv2d, ModulatedDeformConv2d)
_COUNTED = _CONVS + (nn.Linear, nn.ConvTranspose2d)


def layer_macs(module: nn.Module, inputs: Tuple[Tensor, ...],
               output: Tensor) -> int:
    """Multiply-adds of one call of a counted layer (0 for others)."""
    if isinstance(module, nn.Linear):
        return output.numel() * module.in_features
    if isinstance(module, nn.ConvTranspose2d):
        # every input position spreads into a kernel of every output channel
        kernel = module.kernel_size[0] * module.kernel_size[1]
        return inputs[0].numel() * kernel * (
            module.out_channels // module.groups)
    if isinstance(module, _CONVS):
        kernel = module.kernel_size[0] * module.kernel_size[1]
        return output.numel() * kernel * (
            module.in_channels // module.groups)
    return 0


def component_of(name: str) -> str:
    """``'roi_head.mask_head.convs.0.conv'`` -> ``'roi_head.mask_head'``;
    ``'backbone.layer1.0.conv1'`` -> ``'backbone'``."""
    parts = name.split('.')
    depth = 2 if parts[0] in SPLIT and len(parts) > 1 else 1
    return '.'.join(parts[:depth])


def components(model: nn.Module) -> Iterator[Tuple[str, nn.Module]]:
    """The named components of ``model`` (see :func:`component_of`)."""
    for name, module in model.named_children():
        if name in SPLIT:
            for child, sub in module.named_children():
                yield f'{name}.{child}', sub
        else:
            yield name, module


class MacCounter:
    """Counts multiply-adds and rows per component while active.

    Example:
        >>> with MacCounter(model) as counter:
        ...     model(**data, mode='predict')
        >>> counter.macs['roi_head.mask_iou_head'], counter.rows[...]

    Attributes:
        macs (dict[str, int]): Multiply-adds per component.
        rows (dict[str, int]): Leading size of the inputs of each component's
            calls, summed (images or RoIs).
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.macs: Dict[str, int] = defaultdict(int)
        self.rows: Dict[str, int] = defaultdict(int)
        self._handles = []

    def _count_layer(self, name: str):
        component = component_of(name)

        def hook(module, inputs, output):
            self.macs[component] += layer_macs(module, inputs, output)

        return hook

    def _count_rows(self, component: str):

        def hook(module, inputs, output):
            first = inputs[0] if inputs else None
            if isinstance(first, (list, tuple)) and first:
                first = first[0]  # multi-level features: images
            if isinstance(first, Tensor) and first.dim() > 0:
                self.rows[component] += first.size(0)

        return hook

    def __enter__(self) -> 'MacCounter':
        for name, module in self.model.named_modules():
            if name and isinstance(module, _COUNTED):
                self._handles.append(
                    module.register_forward_hook(self._count_layer(name)))
        for name, module in components(self.model):
            self._handles.append(
                module.register_forward_hook(self._count_rows(name)))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def total(self, exclude: Tuple[str, ...] = ()) -> int:
        """Multiply-adds of every component but ``exclude``."""
        return sum(v for k, v in self.macs.items() if k not in exclude)

    def per_row(self, component: str) -> float:
        """Multiply-adds per row (per RoI for a head); NaN if never called."""
        rows = self.rows.get(component, 0)
        return self.macs.get(component, 0) / rows if rows else float('nan')


@torch.no_grad()
def count_predict(model: nn.Module, data: dict) -> MacCounter:
    """Count one ``predict`` pass of ``model`` on preprocessed ``data``."""
    model.eval()
    with MacCounter(model) as counter:
        model(**data, mode='predict')
    return counter


def flops_report(counter: MacCounter, num_images: int,
                 head: str = 'roi_head.mask_iou_head') -> dict:
    """Per-image multiply-adds of each component, and ``head``'s cost per
    RoI and share of the rest of the model (what it adds to Mask R-CNN).

    Returns:
        dict: ``components`` (name -> ``gmacs_per_image``,
        ``rows_per_image``, ``gmacs_per_row``), ``total_gmacs_per_image``,
        ``head`` (``name``, ``gmacs_per_image``, ``gmacs_per_roi``,
        ``rois_per_image``, ``share``: head / everything else).
    """
    table = {}
    # RoI extractors and other uncounted parts are left out
    for name in sorted(k for k, v in counter.macs.items() if v):
        table[name] = dict(
            gmacs_per_image=counter.macs.get(name, 0) / GIGA / num_images,
            rows_per_image=counter.rows.get(name, 0) / num_images,
            gmacs_per_row=counter.per_row(name) / GIGA)
    rest = counter.total(exclude=(head, ))
    return dict(
        components=table,
        total_gmacs_per_image=counter.total() / GIGA / num_images,
        head=dict(
            name=head,
            gmacs_per_image=counter.macs.get(head, 0) / GIGA / num_images,
            gmacs_per_roi=counter.per_row(head) / GIGA,
            rois_per_image=counter.rows.get(head, 0) / num_images,
            share=counter.macs.get(head, 0) / rest if rest else float('nan')))
