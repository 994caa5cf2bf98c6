"""Area ratios of ground-truth masks inside proposals, without a loop over
proposals.

The MaskIoU target needs the area of the whole ground-truth instance, but the
mask target only covers the part inside the proposal. The ratio
``area inside the proposal / whole area`` recovers it. mmdet 3.3.0 computes
it with a per-proposal NumPy loop and a device-to-host copy per image.

Where the proposals are on the CPU, each image's bitmap masks go to a
compiled kernel (``csrc/box_areas.c``, built by ``setup.py``) that runs on
torch's threads, one instance at a time: it reads the instance's rows once,
32 pixels at a time, to find its bounding box; the edges of the instance's
proposals cut that box into a grid, and a second pass over the box (still
in the CPU's caches) counts the pixels of each grid cell, which makes the
grid's summed-area table; each proposal reads four of its entries.
Instances no proposal refers to are not read.

Polygon masks, and bitmap masks where the kernel could not be built, take
the NumPy path: each instance is cropped to the rows and 4-pixel words it
occupies (one pass over the masks finds the rows; the columns are found in
those rows only), each crop becomes a summed-area table (OpenCV's
``integral``) and every proposal is one gather of four table entries, for
all proposals at once. For proposals on an accelerator these host tables go
to their device in one copy; masks given as a tensor on an accelerator get
whole-image tables built there (:func:`dense_tables`). Nothing travels from
the device to the host.

Pixel convention: pixel ``(y, x)`` lies inside a box ``(x1, y1, x2, y2)`` when
its centre ``(x + 0.5, y + 0.5)`` satisfies ``x1 <= x + 0.5 < x2`` and
``y1 <= y + 0.5 < y2``, the convention of RoIAlign with ``aligned=True`` that
produces the mask targets. On integer boxes it is the crop
``mask[y1:y2, x1:x2]``.
"""
import importlib
import warnings
from itertools import chain
from typing import (Iterable, List, NamedTuple, Optional, Sequence, Tuple,
                    Union)

import cv2
import numpy as np
import pycocotools.mask as mask_util
import torch
from mmdet.structures.mask import BitmapMasks, PolygonMasks
from torch import Tensor

try:
    _box_areas = importlib.import_module(f'{__package__}._box_areas')
    _KERNEL_ERROR = ''
except ImportError as error:  # setup.py could not compile it here
    _box_areas = None
    _KERNEL_ERROR = str(error)
#: whether the missing kernel was reported (:func:`kernel_available`)
_WARNED = False

Masks = Union[BitmapMasks, PolygonMasks, Tensor]
#: word read when scanning masks for non-empty rows: 4 pixels of 0/1 bytes
#: make an int32 that is positive exactly when one of them is set (int32
#: maxima vectorise on every x86-64 SIMD level; int64 ones need AVX-512)
WORD = np.dtype(np.int32)


class Crop(NamedTuple):
    """An instance's pixels inside a box that holds all of them (top-left
    ``y0, x0``)."""
    y0: int
    x0: int
    pixels: np.ndarray  # (h, w) uint8

    @classmethod
    def empty(cls) -> 'Crop':
        return cls(0, 0, np.zeros((0, 0), np.uint8))


class Crops(NamedTuple):
    """An image's instances as crops, in order, and an upper bound on the
    summed-area table entries they need (``sum (h + 1) * (w + 1)``), known
    before the crops are: bitmap crops are found one by one as their tables
    are written."""
    crops: Iterable[Crop]
    capacity: int


def table_size(crop: Crop) -> int:
    """Entries of the summed-area table of ``crop``."""
    height, width = crop.pixels.shape
    return (height + 1) * (width + 1)


def mask_bytes(masks: np.ndarray) -> np.ndarray:
    """Binary ``(N, H, W)`` masks as C-contiguous bytes: one-byte masks as
    they are (0/1, as ``BitmapMasks`` hold them), wider types as 0/1 bytes
    (nonzero is a pixel)."""
    masks = np.ascontiguousarray(masks)
    if masks.dtype.itemsize != 1:
        masks = masks != 0
    return masks.view(np.uint8)


def _words(masks: np.ndarray) -> np.ndarray:
    """``masks`` read a :data:`WORD` at a time where the width allows it."""
    return masks.view(WORD) if masks.shape[-1] % WORD.itemsize == 0 else masks


def bitmap_crops(masks: np.ndarray) -> Crops:
    """Crop each ``(N, H, W)`` binary mask to the rows and words it
    occupies (at most ``WORD.itemsize - 1`` empty columns on each side).

    The occupied rows of every mask are found now, in one pass; the columns
    of each mask are found, in its occupied rows only, when its crop is
    drawn from the returned iterator.
    """
    masks = mask_bytes(masks)
    num, height, width = masks.shape
    if num == 0 or height * width == 0:
        return Crops([Crop.empty()] * num, num)
    words = _words(masks)
    occupied = (torch.from_numpy(words).amax(2) > 0).numpy()
    nonempty = occupied.any(1)
    first = np.where(nonempty, occupied.argmax(1), 0)
    last = np.where(nonempty, height - occupied[:, ::-1].argmax(1), 0)
    return Crops(
        _column_crops(masks, words, first.tolist(), last.tolist()),
        int(((last - first + 1) * (width + 1)).sum()))


def _column_crops(masks: np.ndarray, words: np.ndarray, first: List[int],
                  last: List[int]) -> Iterable[Crop]:
    """Crops of :func:`bitmap_crops`, given each mask's occupied rows
    (``first == last`` for an empty mask)."""
    step = masks.shape[2] // words.shape[2]
    for mask, mask_words, y0, y1 in zip(masks, words, first, last):
        if y0 == y1:
            yield Crop.empty()
            continue
        occupied = mask_words[y0:y1].max(0).nonzero()[0]
        x0, x1 = occupied[0] * step, (occupied[-1] + 1) * step
        yield Crop(y0, x0, mask[y0:y1, x0:x1])


def polygon_crops(masks: PolygonMasks) -> Crops:
    """Rasterise each instance's polygons inside their bounding box only.

    Rasterisation is pycocotools', as in ``PolygonMasks.to_bitmap``; shifting
    the polygons by the integer crop origin leaves it unchanged.
    """
    crops = [_polygon_crop(polygons, masks.height, masks.width)
             for polygons in masks.masks]
    return Crops(crops, sum(table_size(crop) for crop in crops))


def _polygon_crop(polygons: list, height: int, width: int) -> Crop:
    """One instance of :func:`polygon_crops`."""
    polygons = [np.asarray(p, np.float64).reshape(-1, 2)
                for p in polygons if len(p) >= 6]
    if not polygons:
        return Crop.empty()
    coords = np.concatenate(polygons)
    x0, y0 = np.clip(np.floor(coords.min(0)), 0, None).astype(int)
    x1 = int(min(np.ceil(coords[:, 0].max()) + 1, width))
    y1 = int(min(np.ceil(coords[:, 1].max()) + 1, height))
    if x1 <= x0 or y1 <= y0:
        return Crop.empty()
    shifted = [(p - [x0, y0]).ravel().tolist() for p in polygons]
    rles = mask_util.frPyObjects(shifted, y1 - y0, x1 - x0)
    return Crop(int(y0), int(x0), mask_util.decode(mask_util.merge(rles)))


Array = Union[np.ndarray, Tensor]


class SummedAreaTables:
    """Summed-area tables of many instances, in one flat array.

    Instance ``i`` covers image rows ``y0 <= r <= y1`` and columns
    ``x0 <= c <= x1`` of its table: entry ``table[base + r * stride + c]``
    counts its pixels above image row ``r`` and left of image column ``c``.
    Tables built from host crops are NumPy arrays until :meth:`to` moves
    them to a device; the lookups run wherever the tables are.

    Args:
        table (np.ndarray | Tensor): The flat tables, int32.
        layout (np.ndarray | Tensor): ``(N, 7)`` int64 rows of
            ``(x0, y0, x1, y1, base, stride, area)``, ``area`` being the
            instance's whole pixel count.
    """

    def __init__(self, table: Array, layout: Array) -> None:
        self.table = table
        self.layout = layout

    @classmethod
    def from_crops(cls, crops: Iterable[Crop],
                   capacity: int) -> 'SummedAreaTables':
        """Build the tables on the host (OpenCV's ``integral``, each written
        in place into one buffer of ``capacity`` entries as soon as its crop
        is drawn)."""
        table = np.empty(max(capacity, 1), np.int32)
        origins, sizes, start = [], [], 0
        for y0, x0, pixels in crops:
            height, width = pixels.shape
            end = start + (height + 1) * (width + 1)
            cv2.integral(pixels, sum=table[start:end].reshape(
                height + 1, width + 1), sdepth=cv2.CV_32S)
            origins.append((x0, y0))
            sizes.append((width, height))
            start = end
        origin = np.array(origins, np.int64).reshape(-1, 2)
        size = np.array(sizes, np.int64).reshape(-1, 2)
        stride = size[:, 0] + 1
        entries = stride * (size[:, 1] + 1)
        ends = np.cumsum(entries)
        starts = ends - entries
        return cls(
            table[:max(start, 1)],
            np.column_stack([
                origin, origin + size,
                starts - origin[:, 1] * stride - origin[:, 0], stride,
                table[ends - 1]
            ]))

    def to(self, device: torch.device) -> 'SummedAreaTables':
        """The tables as tensors on ``device`` (one copy each)."""
        return SummedAreaTables(
            torch.as_tensor(self.table).to(device, non_blocking=True),
            torch.as_tensor(self.layout).to(device, non_blocking=True))

    def box_areas(self, boxes: Array, inds: Array) -> Tuple[Array, Array]:
        """Pixels of instance ``inds[k]`` inside ``boxes[k]``, and in all.

        One gather reads, per box, the four table entries at the corners of
        the pixels it holds. The same code serves NumPy and torch.

        Args:
            boxes (np.ndarray | Tensor): ``(n, 4)`` float boxes
                ``(x1, y1, x2, y2)``, of the tables' array type.
            inds (np.ndarray | Tensor): ``(n, )`` instance of each box.

        Returns:
            tuple: ``(n, )`` pixel counts inside the boxes (int32) and of
            the whole instances (int64).
        """
        xp = torch if isinstance(self.table, Tensor) else np
        layout = self.layout[inds]
        low, high = layout[:, 0:2], layout[:, 2:4]
        # first and one-past-last pixel whose centre lies inside the box,
        # ((x, y) near, (x, y) far), clipped to the instance's table; a far
        # corner before the near one holds no pixel
        corners = _first_pixel_inside(boxes).reshape(-1, 2, 2)
        near = xp.minimum(xp.maximum(corners[:, 0], low), high)
        far = xp.minimum(xp.maximum(corners[:, 1], near), high)
        rows = xp.stack([near[:, 1], far[:, 1]], 1) * layout[:, 5:6] + \
            layout[:, 4:5]
        cols = xp.stack([near[:, 0], far[:, 0]], 1)
        # entries (r0, c0) (r0, c1) / (r1, c0) (r1, c1): the inside count is
        # their second difference along both axes
        entries = self.table[rows[:, :, None] + cols[:, None, :]]
        inside = entries[:, 1, 1] - entries[:, 1, 0] - entries[:, 0, 1] + \
            entries[:, 0, 0]
        return inside, layout[:, 6]


def _first_pixel_inside(coords: Array) -> Array:
    """Index of the first pixel whose centre is at or after each
    coordinate, as int64."""
    if isinstance(coords, Tensor):
        return torch.ceil(coords - 0.5).long()
    return np.ceil(coords - 0.5).astype(np.int64)


def instance_crops(masks: Masks) -> Crops:
    """One image's instances cropped to their bounding boxes, on the host.

    Args:
        masks (BitmapMasks | PolygonMasks | Tensor): The image's instances; a
            tensor is a binary ``(N, H, W)`` one on the CPU.
    """
    if isinstance(masks, PolygonMasks):
        return polygon_crops(masks)
    bitmap = host_bitmap(masks)
    if bitmap is None:
        raise TypeError('gt masks must be BitmapMasks, PolygonMasks or a '
                        f'Tensor, got {type(masks).__name__}')
    return bitmap_crops(bitmap)


def host_bitmap(masks: Masks) -> Optional[np.ndarray]:
    """The ``(N, H, W)`` array of bitmap masks (``BitmapMasks`` or a
    tensor) on the host; ``None`` for other masks."""
    if isinstance(masks, BitmapMasks):
        return masks.masks
    if isinstance(masks, Tensor):
        return masks.detach().cpu().numpy()
    return None


def kernel_box_areas(masks: np.ndarray, boxes: np.ndarray,
                     inds: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """:meth:`SummedAreaTables.box_areas` of one image's bitmap masks,
    computed by the compiled kernel (``csrc/box_areas.c``) on torch's CPU
    threads.

    Args:
        masks (np.ndarray): ``(N, H, W)`` binary masks.
        boxes (np.ndarray): ``(n, 4)`` float boxes ``(x1, y1, x2, y2)``.
        inds (np.ndarray): ``(n, )`` instance of each box.

    Returns:
        tuple: ``(n, )`` int64 pixel counts inside the boxes and of the
        whole instances.
    """
    masks = mask_bytes(masks)
    num = len(masks)
    inds = np.asarray(inds, np.int64)
    if len(inds) and not 0 <= inds.min() <= inds.max() < num:
        raise IndexError(f'gt instance indices {inds.min()}..{inds.max()} '
                         f'for {num} instances')
    # the kernel takes each instance's boxes together: sort them by instance
    order = np.argsort(inds, kind='stable')
    corners = _first_pixel_inside(np.asarray(boxes)[order])
    starts = np.zeros(num + 1, np.int64)
    np.cumsum(np.bincount(inds, minlength=num), out=starts[1:])
    inside, whole = np.empty(len(inds), np.int64), np.empty(num, np.int64)
    _box_areas.box_areas(masks, masks.shape, corners, starts, inside, whole,
                         torch.get_num_threads())
    unsorted = np.empty_like(inside)
    unsorted[order] = inside
    return unsorted, whole[inds]


def host_box_areas(masks: Masks, boxes: np.ndarray,
                   inds: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Pixels of one image's instance ``inds[k]`` inside ``boxes[k]``, and
    in all, on the host: by the compiled kernel for bitmap masks, from
    summed-area tables of the crops otherwise."""
    bitmap = host_bitmap(masks)
    if bitmap is not None and kernel_available(warn=True):
        return kernel_box_areas(bitmap, boxes, inds)
    crops = instance_crops(masks)
    tables = SummedAreaTables.from_crops(crops.crops, crops.capacity)
    return tables.box_areas(boxes, inds)


def kernel_available(warn: bool = False) -> bool:
    """Whether the compiled kernel was built; ``warn`` says once, with
    the reason, when it was not."""
    global _WARNED
    if _box_areas is None and warn and not _WARNED:
        _WARNED = True
        warnings.warn(
            'ms_rcnn_mm: the compiled MaskIoU-target kernel is missing '
            f'({_KERNEL_ERROR}); the NumPy path is used, several times '
            'slower. Reinstall with a C compiler with OpenMP (gcc).')
    return _box_areas is not None


def dense_tables(masks: Sequence[Tensor]) -> SummedAreaTables:
    """Whole-image summed-area tables of binary ``(N, H, W)`` masks, built
    on their device (used for masks that already live on an accelerator, so
    that nothing is copied to the host)."""
    device = masks[0].device
    tables, layouts, start = [], [], 0
    for image in masks:
        num, height, width = image.shape
        table = image.new_zeros((num, height + 1, width + 1),
                                dtype=torch.int32)
        table[:, 1:, 1:] = (image != 0).int().cumsum(
            1, dtype=torch.int32).cumsum(2, dtype=torch.int32)
        layout = torch.tensor([0, 0, width, height, start, width + 1, 0],
                              device=device).repeat(num, 1)
        layout[:, 4] += torch.arange(num, device=device) * table[0].numel()
        layout[:, 6] = table[:, height, width]
        tables.append(table.flatten())
        layouts.append(layout)
        start += table.numel()
    if not tables:
        return SummedAreaTables(
            torch.zeros(1, dtype=torch.int32, device=device),
            torch.zeros((0, 7), dtype=torch.int64, device=device))
    return SummedAreaTables(torch.cat(tables), torch.cat(layouts))


def batch_tables(masks: Sequence[Masks],
                 device: torch.device) -> SummedAreaTables:
    """Summed-area tables of every instance of the batch, in one buffer, on
    ``device`` (an accelerator); instance ``j`` of image ``i`` is entry
    ``offset_i + j`` where ``offset_i`` counts the instances of the images
    before it."""
    if all(isinstance(m, Tensor) and m.device.type != 'cpu' for m in masks):
        return dense_tables(masks)
    images = [instance_crops(image) for image in masks]
    return SummedAreaTables.from_crops(
        chain.from_iterable(image.crops for image in images),
        sum(image.capacity for image in images)).to(device)


def area_ratios(boxes: Sequence[Tensor], gt_inds: Sequence[Tensor],
                masks: Sequence[Masks]) -> Tensor:
    """Ratio of each assigned instance's area inside its box to its area.

    Args:
        boxes (Sequence[Tensor]): Per image, ``(n_i, 4)`` proposals.
        gt_inds (Sequence[Tensor]): Per image, ``(n_i, )`` index of the
            instance assigned to each proposal.
        masks (Sequence[BitmapMasks | PolygonMasks | Tensor]): Per image,
            its instances.

    Returns:
        Tensor: ``(sum n_i, )`` float32 ratios in ``[0, 1]`` on the boxes'
        device; 0 where the instance has no pixel (zero-area masks) or none
        inside the box.
    """
    device = boxes[0].device
    if sum(len(image_boxes) for image_boxes in boxes) == 0:
        return torch.zeros((0, ), device=device)
    if device.type == 'cpu':
        inside, whole = map(np.concatenate, zip(*(
            host_box_areas(image, image_boxes.detach().float().numpy(),
                           image_inds.numpy())
            for image, image_boxes, image_inds in zip(masks, boxes, gt_inds))))
        inside, whole = torch.from_numpy(inside), torch.from_numpy(whole)
    else:
        tables = batch_tables(masks, device)
        offsets = np.cumsum([0] + [len(image) for image in masks[:-1]])
        inds = torch.cat([
            image_inds.long() + int(offset)
            for image_inds, offset in zip(gt_inds, offsets)
        ])
        inside, whole = tables.box_areas(torch.cat(list(boxes)).float(), inds)
    # inside <= whole, so an instance with no pixel gives 0 / 1
    return inside.float() / whole.clamp(min=1).float()


def gt_area_ratios(boxes: Tensor, gt_inds: Tensor, masks: Masks) -> Tensor:
    """:func:`area_ratios` of one image."""
    return area_ratios([boxes], [gt_inds], [masks])
