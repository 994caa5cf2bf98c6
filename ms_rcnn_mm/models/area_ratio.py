"""Area ratios of ground-truth masks inside proposals, without a loop over
proposals.

The MaskIoU target needs the area of the whole ground-truth instance, but the
mask target only covers the part inside the proposal. The ratio
``area inside the proposal / whole area`` recovers it. mmdet 3.3.0 computes
it with a per-proposal NumPy loop and a device-to-host copy per image.

Here, where the masks live (on the host for mmdet's ``BitmapMasks`` and
``PolygonMasks``), each instance is cropped to the rows and 4-pixel words it
occupies (one pass over the masks, reading 4 pixels at a time), and each
crop becomes a summed-area table (OpenCV's ``integral``), all written into
one buffer. The tables go to the proposals' device in one copy, and every
proposal's area is four table lookups, for all proposals of the batch at
once. Nothing travels from the device to the host.

Pixel convention: pixel ``(y, x)`` lies inside a box ``(x1, y1, x2, y2)`` when
its centre ``(x + 0.5, y + 0.5)`` satisfies ``x1 <= x + 0.5 < x2`` and
``y1 <= y + 0.5 < y2``, the convention of RoIAlign with ``aligned=True`` that
produces the mask targets. On integer boxes it is the crop
``mask[y1:y2, x1:x2]``.
"""
from typing import List, NamedTuple, Sequence, Union

import cv2
import numpy as np
import pycocotools.mask as mask_util
import torch
from mmdet.structures.mask import BitmapMasks, PolygonMasks
from torch import Tensor

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


def _span(occupied: np.ndarray) -> tuple:
    """First and one-past-last True of a 1-D bool array with a True."""
    return (int(occupied.argmax()),
            len(occupied) - int(occupied[::-1].argmax()))


def _words(masks: np.ndarray) -> np.ndarray:
    """``masks`` read a :data:`WORD` at a time where the width allows it."""
    return masks.view(WORD) if masks.shape[-1] % WORD.itemsize == 0 else masks


def bitmap_crops(masks: np.ndarray) -> List[Crop]:
    """Crop each ``(N, H, W)`` binary mask to the rows and words it
    occupies (at most ``WORD.itemsize - 1`` empty columns on each side)."""
    masks = np.ascontiguousarray(masks).view(np.uint8)
    if masks.shape[0] == 0 or masks.shape[1] * masks.shape[2] == 0:
        return [Crop.empty() for _ in range(masks.shape[0])]
    words = _words(masks)
    step = masks.shape[2] // words.shape[2]
    occupied_rows = (torch.from_numpy(words).amax(2) > 0).numpy()
    crops = []
    for mask, mask_words, rows, nonempty in zip(masks, words, occupied_rows,
                                                occupied_rows.any(1)):
        if not nonempty:
            crops.append(Crop.empty())
            continue
        y0, y1 = _span(rows)
        x0, x1 = _span(mask_words[y0:y1].max(0) > 0)
        crops.append(Crop(y0, x0 * step, mask[y0:y1, x0 * step:x1 * step]))
    return crops


def polygon_crops(masks: PolygonMasks) -> List[Crop]:
    """Rasterise each instance's polygons inside their bounding box only.

    Rasterisation is pycocotools', as in ``PolygonMasks.to_bitmap``; shifting
    the polygons by the integer crop origin leaves it unchanged.
    """
    crops = []
    for polygons in masks.masks:
        polygons = [np.asarray(p, np.float64).reshape(-1, 2)
                    for p in polygons if len(p) >= 6]
        if not polygons:
            crops.append(Crop.empty())
            continue
        coords = np.concatenate(polygons)
        x0, y0 = np.clip(np.floor(coords.min(0)), 0, None).astype(int)
        x1 = int(min(np.ceil(coords[:, 0].max()) + 1, masks.width))
        y1 = int(min(np.ceil(coords[:, 1].max()) + 1, masks.height))
        if x1 <= x0 or y1 <= y0:
            crops.append(Crop.empty())
            continue
        shifted = [(p - [x0, y0]).ravel().tolist() for p in polygons]
        rles = mask_util.frPyObjects(shifted, y1 - y0, x1 - x0)
        crops.append(Crop(int(y0), int(x0),
                          mask_util.decode(mask_util.merge(rles))))
    return crops


class SummedAreaTables:
    """Summed-area tables of many cropped instances, in one flat tensor.

    Instance ``i``'s table has ``(h + 1) x (w + 1)`` entries starting at
    ``layout[i, 0]``; entry ``(r, c)`` counts its pixels above crop row ``r``
    and left of crop column ``c``.

    Args:
        table (Tensor): The flat tables, int32.
        layout (Tensor): ``(N, 5)`` int64 rows of ``(start, y0, x0, h, w)``.
    """

    def __init__(self, table: Tensor, layout: Tensor) -> None:
        self.table = table
        self.layout = layout

    @classmethod
    def from_crops(cls, crops: List[Crop],
                   device: torch.device) -> 'SummedAreaTables':
        """Build the tables on the host (OpenCV's ``integral``, written in
        place into one buffer) and move them with one copy each."""
        shapes = np.array([c.pixels.shape for c in crops],
                          np.int64).reshape(-1, 2)
        sizes = (shapes + 1).prod(1)
        starts = np.concatenate([[0], np.cumsum(sizes)])
        table = np.empty(max(starts[-1], 1), np.int32)
        for crop, (h, w), first in zip(crops, shapes, starts):
            cv2.integral(crop.pixels, sum=table[first:first + (h + 1) *
                                                (w + 1)].reshape(h + 1, w + 1),
                         sdepth=cv2.CV_32S)
        origins = np.array([(c.y0, c.x0) for c in crops],
                           np.int64).reshape(-1, 2)
        layout = np.column_stack([starts[:-1], origins, shapes])
        return cls(
            torch.from_numpy(table).to(device, non_blocking=True),
            torch.from_numpy(layout).to(device, non_blocking=True))

    def _at(self, layout: Tensor, row: Tensor, col: Tensor) -> Tensor:
        """Entry ``(row, col)`` of the tables of ``layout``'s instances."""
        return self.table[layout[:, 0] + row * (layout[:, 4] + 1) + col]

    def box_areas(self, boxes: Tensor, inds: Tensor) -> Tensor:
        """Pixels of instance ``inds[k]`` inside ``boxes[k]``, for all k.

        Args:
            boxes (Tensor): ``(n, 4)`` float boxes ``(x1, y1, x2, y2)``.
            inds (Tensor): ``(n, )`` instance of each box.

        Returns:
            Tensor: ``(n, )`` int32 pixel counts.
        """
        layout = self.layout[inds]
        # first and one-past-last pixel whose centre lies inside the box,
        # in crop coordinates, clipped to the crop and ordered
        pixels = torch.ceil(boxes - 0.5).long() - layout[:, [2, 1, 2, 1]]
        limits = layout[:, [4, 3, 4, 3]]
        pixels = torch.minimum(pixels.clamp(min=0), limits)
        c0, r0 = pixels[:, 0], pixels[:, 1]
        c1, r1 = torch.maximum(pixels[:, 2], c0), torch.maximum(
            pixels[:, 3], r0)
        return (self._at(layout, r1, c1) - self._at(layout, r0, c1) -
                self._at(layout, r1, c0) + self._at(layout, r0, c0))

    def areas(self, inds: Tensor) -> Tensor:
        """Whole area of instance ``inds[k]``, ``(n, )`` int32."""
        layout = self.layout[inds]
        return self._at(layout, layout[:, 3], layout[:, 4])


def instance_crops(masks: Masks) -> List[Crop]:
    """One image's instances cropped to their bounding boxes, on the host.

    Args:
        masks (BitmapMasks | PolygonMasks | Tensor): The image's instances; a
            tensor is ``(N, H, W)`` and binary (copied to the host once).
    """
    if isinstance(masks, PolygonMasks):
        return polygon_crops(masks)
    if isinstance(masks, BitmapMasks):
        return bitmap_crops(masks.masks)
    if isinstance(masks, Tensor):
        return bitmap_crops(masks.detach().to('cpu', torch.uint8).numpy())
    raise TypeError('gt masks must be BitmapMasks, PolygonMasks or a '
                    f'Tensor, got {type(masks).__name__}')


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
    return torch.cat([
        gt_area_ratios(*image) for image in zip(boxes, gt_inds, masks)
    ])


def gt_area_ratios(boxes: Tensor, gt_inds: Tensor, masks: Masks) -> Tensor:
    """:func:`area_ratios` of one image (its tables are built right after
    its masks are scanned, while they are still in the CPU's caches)."""
    if boxes.numel() == 0:
        return boxes.new_zeros((0, ), dtype=torch.float32)
    tables = SummedAreaTables.from_crops(instance_crops(masks), boxes.device)
    inds = gt_inds.long()
    inside = tables.box_areas(boxes.float(), inds).float()
    whole = tables.areas(inds).float()
    return torch.where(whole > 0, inside / whole.clamp(min=1),
                       torch.zeros_like(inside))
