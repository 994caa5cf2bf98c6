"""Area ratios of ground-truth masks inside proposals, without a loop over
proposals.

The MaskIoU target needs the area of the whole ground-truth instance, but the
mask target only covers the part inside the proposal. The ratio
``area inside the proposal / whole area`` recovers it. mmdet 3.3.0 computes
it with a per-proposal NumPy loop and a device-to-host copy per image.

Here the count runs on the host, where the masks are (``BitmapMasks`` and
``PolygonMasks`` hold NumPy arrays and lists), wherever the proposals are:
the proposals of the whole batch come to the host in one copy (none on the
CPU), and the ratios go back to the proposals' device in one non-blocking
copy. There are two implementations of the count:

- the compiled kernel (``csrc/box_areas.c``, built by ``setup.py``), for
  bitmap masks: it runs on torch's CPU threads, one instance at a time, reads
  the instance's rows once for its bounding box, cuts that box into the grid
  of its proposals' edges and counts each grid cell in a second pass over the
  box (still in the CPU's caches); each proposal reads four entries of the
  grid's summed-area table. Instances no proposal refers to are not read.
- the portable path, for polygon masks, for bitmap masks where the kernel
  could not be built, and wherever ``MS_RCNN_MM_NO_KERNEL=1`` asks for it:
  each instance is cropped to its bounding box (polygons are rasterised
  inside it only), each crop becomes a summed-area table (OpenCV's
  ``integral``) and every proposal is one gather of four table entries.

On both, any non-zero mask element is a pixel: masks of 0/1 or 0/255 bytes,
booleans or wider types give the same ratios.

Pixel convention: pixel ``(y, x)`` lies inside a box ``(x1, y1, x2, y2)`` when
its centre ``(x + 0.5, y + 0.5)`` satisfies ``x1 <= x + 0.5 < x2`` and
``y1 <= y + 0.5 < y2``, the convention of RoIAlign with ``aligned=True`` that
produces the mask targets. On integer boxes it is the crop
``mask[y1:y2, x1:x2]``.
"""
import importlib
import os
import warnings
from typing import List, NamedTuple, Sequence, Set, Tuple, Union

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
#: environment variable that, set to ``1``, forces the portable path
NO_KERNEL_ENV = 'MS_RCNN_MM_NO_KERNEL'
#: the reasons for the portable path already reported (each is said once)
_WARNED: Set[str] = set()

Masks = Union[BitmapMasks, PolygonMasks, Tensor]
#: word in which the portable path scans masks for their rows and columns:
#: 4 pixels per OR instead of 1
WORD = np.dtype(np.int32)


class Crop(NamedTuple):
    """An instance's pixels inside a box that holds all of them (top-left
    ``y0, x0``)."""
    y0: int
    x0: int
    pixels: np.ndarray  # (h, w) uint8, 0/1

    @classmethod
    def empty(cls) -> 'Crop':
        return cls(0, 0, np.zeros((0, 0), np.uint8))


def table_size(crop: Crop) -> int:
    """Entries of the summed-area table of ``crop``."""
    height, width = crop.pixels.shape
    return (height + 1) * (width + 1)


def mask_bytes(masks: np.ndarray) -> np.ndarray:
    """``(N, H, W)`` masks as C-contiguous one-byte elements whose non-zero
    ones are the pixels: one-byte masks as they are (0/1 or 0/255 bytes,
    booleans), wider types as 0/1 bytes."""
    masks = np.ascontiguousarray(masks)
    if masks.dtype.itemsize != 1:
        masks = masks != 0
    return masks.view(np.uint8)


def _words(masks: np.ndarray) -> np.ndarray:
    """``(N, H, W)`` one-byte masks read :data:`WORD` bytes at a time where
    the width allows it: a word is non-zero exactly when one of its bytes
    is, whatever their values."""
    if masks.shape[-1] % WORD.itemsize:
        return masks
    return masks.view(WORD)


def bitmap_crops(masks: np.ndarray) -> List[Crop]:
    """Crop each ``(N, H, W)`` mask to the rows and words of its non-zero
    elements (at most ``WORD.itemsize - 1`` empty columns on each side), as
    0/1 bytes.

    Rows and columns are found with bitwise ORs of words, which keep every
    non-zero byte non-zero (a comparison such as ``> 0`` on the words would
    miss the words whose top byte is 255).
    """
    masks = mask_bytes(masks)
    words = _words(masks)
    step = masks.shape[2] // max(words.shape[2], 1)
    occupied_rows = np.bitwise_or.reduce(words, axis=2) != 0
    crops = []
    for mask, mask_words, rows in zip(masks, words, occupied_rows):
        ys = np.flatnonzero(rows)
        if not len(ys):
            crops.append(Crop.empty())
            continue
        y0, y1 = int(ys[0]), int(ys[-1]) + 1
        xs = np.flatnonzero(np.bitwise_or.reduce(mask_words[y0:y1], axis=0))
        x0, x1 = int(xs[0]) * step, (int(xs[-1]) + 1) * step
        pixels = (mask[y0:y1, x0:x1] != 0).view(np.uint8)
        crops.append(Crop(y0, x0, pixels))
    return crops


def polygon_crops(masks: PolygonMasks) -> List[Crop]:
    """Rasterise each instance's polygons inside their bounding box only.

    Rasterisation is pycocotools', as in ``PolygonMasks.to_bitmap``; shifting
    the polygons by the integer crop origin leaves it unchanged.
    """
    return [_polygon_crop(polygons, masks.height, masks.width)
            for polygons in masks.masks]


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


class SummedAreaTables:
    """Summed-area tables of many instances, in one flat array (the portable
    path).

    Instance ``i`` covers image rows ``y0 <= r <= y1`` and columns
    ``x0 <= c <= x1`` of its table: entry ``table[base + r * stride + c]``
    counts its pixels above image row ``r`` and left of image column ``c``.

    Args:
        table (np.ndarray): The flat tables, int32.
        layout (np.ndarray): ``(N, 7)`` int64 rows of
            ``(x0, y0, x1, y1, base, stride, area)``, ``area`` being the
            instance's whole pixel count.
    """

    def __init__(self, table: np.ndarray, layout: np.ndarray) -> None:
        self.table = table
        self.layout = layout

    @classmethod
    def from_crops(cls, crops: Sequence[Crop]) -> 'SummedAreaTables':
        """Build the tables (OpenCV's ``integral``, each written in place
        into one buffer)."""
        sizes = [table_size(crop) for crop in crops]
        ends = np.cumsum(np.array(sizes, np.int64))
        table = np.empty(max(int(ends[-1]) if len(ends) else 0, 1), np.int32)
        for crop, end, size in zip(crops, ends, sizes):
            height, width = crop.pixels.shape
            cv2.integral(crop.pixels, sum=table[end - size:end].reshape(
                height + 1, width + 1), sdepth=cv2.CV_32S)
        origin = np.array([(c.x0, c.y0) for c in crops],
                          np.int64).reshape(-1, 2)
        size = np.array([c.pixels.shape[::-1] for c in crops],
                        np.int64).reshape(-1, 2)
        stride = size[:, 0] + 1
        starts = ends - stride * (size[:, 1] + 1)
        return cls(
            table,
            np.column_stack([
                origin, origin + size,
                starts - origin[:, 1] * stride - origin[:, 0], stride,
                table[ends - 1] if len(ends) else ends
            ]))

    def box_areas(self, boxes: np.ndarray,
                  inds: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Pixels of instance ``inds[k]`` inside ``boxes[k]``, and in all.

        One gather reads, per box, the four table entries at the corners of
        the pixels it holds.

        Args:
            boxes (np.ndarray): ``(n, 4)`` float boxes ``(x1, y1, x2, y2)``.
            inds (np.ndarray): ``(n, )`` instance of each box.

        Returns:
            tuple: ``(n, )`` pixel counts inside the boxes and of the whole
            instances.
        """
        layout = self.layout[inds]
        low, high = layout[:, 0:2], layout[:, 2:4]
        # first and one-past-last pixel whose centre lies inside the box,
        # ((x, y) near, (x, y) far), clipped to the instance's table; a far
        # corner before the near one holds no pixel
        corners = first_pixel_inside(boxes).reshape(-1, 2, 2)
        near = np.minimum(np.maximum(corners[:, 0], low), high)
        far = np.minimum(np.maximum(corners[:, 1], near), high)
        rows = np.stack([near[:, 1], far[:, 1]], 1) * layout[:, 5:6] + \
            layout[:, 4:5]
        cols = np.stack([near[:, 0], far[:, 0]], 1)
        # entries (r0, c0) (r0, c1) / (r1, c0) (r1, c1): the inside count is
        # their second difference along both axes
        entries = self.table[rows[:, :, None] + cols[:, None, :]]
        inside = entries[:, 1, 1] - entries[:, 1, 0] - entries[:, 0, 1] + \
            entries[:, 0, 0]
        return inside, layout[:, 6]


def first_pixel_inside(coords: np.ndarray) -> np.ndarray:
    """Index of the first pixel whose centre is at or after each
    coordinate, as int64."""
    return np.ceil(np.asarray(coords, np.float64) - 0.5).astype(np.int64)


def host_bitmap(masks: Union[BitmapMasks, Tensor]) -> np.ndarray:
    """The ``(N, H, W)`` array of bitmap masks on the host (a tensor on an
    accelerator is copied: one copy per image)."""
    if isinstance(masks, BitmapMasks):
        return masks.masks
    return masks.detach().cpu().numpy()


def kernel_box_areas(masks: np.ndarray, boxes: np.ndarray,
                     inds: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """:meth:`SummedAreaTables.box_areas` of one image's bitmap masks,
    computed by the compiled kernel (``csrc/box_areas.c``) on torch's CPU
    threads.

    Args:
        masks (np.ndarray): ``(N, H, W)`` masks; non-zero is a pixel.
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
    corners = first_pixel_inside(np.asarray(boxes)[order])
    starts = np.zeros(num + 1, np.int64)
    np.cumsum(np.bincount(inds, minlength=num), out=starts[1:])
    inside, whole = np.empty(len(inds), np.int64), np.empty(num, np.int64)
    _box_areas.box_areas(masks, masks.shape, corners, starts, inside, whole,
                         torch.get_num_threads())
    unsorted = np.empty_like(inside)
    unsorted[order] = inside
    return unsorted, whole[inds]


def portable_box_areas(masks: Masks, boxes: np.ndarray,
                       inds: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """:func:`kernel_box_areas` of any masks, from summed-area tables of the
    instances' crops (no compiled code)."""
    if isinstance(masks, PolygonMasks):
        crops = polygon_crops(masks)
    else:
        crops = bitmap_crops(host_bitmap(masks))
    return SummedAreaTables.from_crops(crops).box_areas(boxes, inds)


def host_box_areas(masks: Masks, boxes: np.ndarray,
                   inds: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Pixels of one image's instance ``inds[k]`` inside ``boxes[k]``, and
    in all: by the compiled kernel for bitmap masks where it is used
    (:func:`kernel_enabled`), on the portable path otherwise."""
    if not isinstance(masks, (BitmapMasks, PolygonMasks, Tensor)):
        raise TypeError('gt masks must be BitmapMasks, PolygonMasks or a '
                        f'Tensor, got {type(masks).__name__}')
    if not isinstance(masks, PolygonMasks) and kernel_enabled(warn=True):
        return kernel_box_areas(host_bitmap(masks), boxes, inds)
    return portable_box_areas(masks, boxes, inds)


def kernel_enabled(warn: bool = False) -> bool:
    """Whether bitmap masks go to the compiled kernel: it was built and
    ``MS_RCNN_MM_NO_KERNEL`` is not ``1``. ``warn`` says once per reason,
    when they do not, why."""
    if os.environ.get(NO_KERNEL_ENV, '').strip() == '1':
        reason = (f'{NO_KERNEL_ENV}=1 is set, so the MaskIoU targets take '
                  'the portable path (summed-area tables of mask crops), '
                  'not the compiled kernel')
    elif _box_areas is None:
        reason = ('the compiled MaskIoU-target kernel is missing '
                  f'({_KERNEL_ERROR}); the portable path is used, which is '
                  'slower. Reinstall with a C compiler with OpenMP (gcc)')
    else:
        return True
    if warn and reason not in _WARNED:
        _WARNED.add(reason)
        warnings.warn(f'ms_rcnn_mm: {reason}.')
    return False


def boxes_on_host(boxes: Sequence[Tensor],
                  gt_inds: Sequence[Tensor]) -> List[np.ndarray]:
    """Per image, ``(n_i, 5)`` float64 rows ``(x1, y1, x2, y2, index)`` on
    the host, from tensors on any device: boxes on an accelerator come in
    one device-to-host copy for the whole batch."""
    rows = torch.cat([
        torch.cat([image_boxes.detach().double(),
                   image_inds.detach().double()[:, None]], 1)
        for image_boxes, image_inds in zip(boxes, gt_inds)
    ]).cpu().numpy()
    ends = np.cumsum([len(image_boxes) for image_boxes in boxes])
    return np.split(rows, ends[:-1])


def area_ratios(boxes: Sequence[Tensor], gt_inds: Sequence[Tensor],
                masks: Sequence[Masks]) -> Tensor:
    """Ratio of each assigned instance's area inside its box to its area.

    Args:
        boxes (Sequence[Tensor]): Per image, ``(n_i, 4)`` proposals, on any
            device.
        gt_inds (Sequence[Tensor]): Per image, ``(n_i, )`` index of the
            instance assigned to each proposal, on the boxes' device.
        masks (Sequence[BitmapMasks | PolygonMasks | Tensor]): Per image,
            its instances; any non-zero element is a pixel.

    Returns:
        Tensor: ``(sum n_i, )`` float32 ratios in ``[0, 1]`` on the boxes'
        device; 0 where the instance has no pixel (zero-area masks) or none
        inside the box.
    """
    device = boxes[0].device
    if sum(len(image_boxes) for image_boxes in boxes) == 0:
        return torch.zeros((0, ), device=device)
    counts = [
        host_box_areas(image_masks, rows[:, :4], rows[:, 4].astype(np.int64))
        for image_masks, rows in zip(masks, boxes_on_host(boxes, gt_inds))
    ]
    inside, whole = (np.concatenate(c).astype(np.float32)
                     for c in zip(*counts))
    # inside <= whole, so an instance with no pixel gives 0 / 1
    ratios = torch.from_numpy(inside / np.maximum(whole, 1))
    # from pageable memory: the copy is staged before this returns
    return ratios.to(device, non_blocking=True)


def gt_area_ratios(boxes: Tensor, gt_inds: Tensor, masks: Masks) -> Tensor:
    """:func:`area_ratios` of one image."""
    return area_ratios([boxes], [gt_inds], [masks])
