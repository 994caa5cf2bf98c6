"""Area ratios of ground-truth masks inside proposals, without a loop over
proposals.

The MaskIoU target needs the area of the whole ground-truth instance, but the
mask target only covers the part inside the proposal. The ratio
``area inside the proposal / whole area`` recovers it. mmdet 3.3.0 computes
it with a per-proposal NumPy loop and a device-to-host copy per image.

Here, where the masks live (on the host for mmdet's ``BitmapMasks`` and
``PolygonMasks``), each instance is cropped to the rows and 4-pixel words it
occupies (one pass over the masks, reading 4 pixels at a time), and each
crop becomes a summed-area table (OpenCV's ``integral``); the tables of every
instance of the batch are written into one buffer, which goes to the
proposals' device in one copy. Masks given as a tensor on an accelerator
get whole-image tables built there (:func:`dense_tables`). Every proposal's
areas are then one gather of five table entries, for all proposals of the
batch at once. Nothing travels from the device to the host.

Pixel convention: pixel ``(y, x)`` lies inside a box ``(x1, y1, x2, y2)`` when
its centre ``(x + 0.5, y + 0.5)`` satisfies ``x1 <= x + 0.5 < x2`` and
``y1 <= y + 0.5 < y2``, the convention of RoIAlign with ``aligned=True`` that
produces the mask targets. On integer boxes it is the crop
``mask[y1:y2, x1:x2]``.
"""
from typing import List, NamedTuple, Sequence, Tuple, Union

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

    def box_areas(self, boxes: Tensor, inds: Tensor) -> Tuple[Tensor, Tensor]:
        """Pixels of instance ``inds[k]`` inside ``boxes[k]``, and in all.

        One gather reads, per box, the four table entries at the corners of
        the pixels it holds and the entry that counts the whole instance.

        Args:
            boxes (Tensor): ``(n, 4)`` float boxes ``(x1, y1, x2, y2)``.
            inds (Tensor): ``(n, )`` instance of each box.

        Returns:
            tuple[Tensor, Tensor]: ``(n, )`` int32 pixel counts inside the
            boxes and of the whole instances.
        """
        start, y0, x0, height, width = self.layout[inds].unbind(1)
        # first and one-past-last pixel whose centre lies inside the box, in
        # crop coordinates, clipped to the crop: columns (c0, c1), rows
        # (r0, r1); the last entry of each is the crop's far corner
        origin = torch.stack([x0, y0, x0, y0], 1)
        limits = torch.stack([width, height, width, height], 1)
        pixels = torch.minimum(
            (torch.ceil(boxes - 0.5).long() - origin).clamp(min=0), limits)
        pixels[:, 2:] = torch.maximum(pixels[:, 2:], pixels[:, :2])
        cols = torch.cat([pixels[:, 0::2], width[:, None]], 1)  # c0 c1 w
        rows = torch.cat([pixels[:, 1::2], height[:, None]], 1)  # r0 r1 h
        # entries (r0, c0) (r0, c1) (r1, c0) (r1, c1) and (h, w)
        row_of = rows[:, [0, 0, 1, 1, 2]]
        col_of = cols[:, [0, 1, 0, 1, 2]]
        entries = self.table[start[:, None] + row_of * (width[:, None] + 1) +
                             col_of]
        inside = entries[:, 3] - entries[:, 1] - entries[:, 2] + entries[:, 0]
        return inside, entries[:, 4]


def instance_crops(masks: Masks) -> List[Crop]:
    """One image's instances cropped to their bounding boxes, on the host.

    Args:
        masks (BitmapMasks | PolygonMasks | Tensor): The image's instances; a
            tensor is a binary ``(N, H, W)`` one on the CPU.
    """
    if isinstance(masks, PolygonMasks):
        return polygon_crops(masks)
    if isinstance(masks, BitmapMasks):
        return bitmap_crops(masks.masks)
    if isinstance(masks, Tensor):
        return bitmap_crops(masks.detach().to(torch.uint8).numpy())
    raise TypeError('gt masks must be BitmapMasks, PolygonMasks or a '
                    f'Tensor, got {type(masks).__name__}')


def dense_tables(masks: Sequence[Tensor]) -> SummedAreaTables:
    """Whole-image summed-area tables of binary ``(N, H, W)`` masks, built
    on their device (used for masks that already live on an accelerator, so
    that nothing is copied to the host)."""
    tables, layouts, start = [], [], 0
    for image in masks:
        num, height, width = image.shape
        table = image.new_zeros((num, height + 1, width + 1),
                                dtype=torch.int32)
        table[:, 1:, 1:] = (image != 0).int().cumsum(
            1, dtype=torch.int32).cumsum(2, dtype=torch.int32)
        tables.append(table.flatten())
        size = (height + 1) * (width + 1)
        layouts += [(start + k * size, 0, 0, height, width)
                    for k in range(num)]
        start += table.numel()
    device = masks[0].device
    return SummedAreaTables(
        torch.cat(tables) if tables else torch.zeros(1, dtype=torch.int32,
                                                    device=device),
        torch.tensor(layouts, dtype=torch.int64).reshape(-1, 5).to(device))


def batch_tables(masks: Sequence[Masks],
                 device: torch.device) -> SummedAreaTables:
    """Summed-area tables of every instance of the batch, in one buffer on
    ``device``; instance ``j`` of image ``i`` is entry ``offset_i + j``
    where ``offset_i`` counts the instances of the images before it."""
    if all(isinstance(m, Tensor) and m.device.type != 'cpu' for m in masks):
        return dense_tables(masks)
    crops = [crop for image in masks for crop in instance_crops(image)]
    return SummedAreaTables.from_crops(crops, device)


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
    boxes = torch.cat(list(boxes)).float()
    if boxes.numel() == 0:
        return boxes.new_zeros((0, ))
    tables = batch_tables(masks, boxes.device)
    offsets = np.cumsum([0] + [len(image) for image in masks[:-1]])
    inds = torch.cat([
        image_inds.long() + int(offset)
        for image_inds, offset in zip(gt_inds, offsets)
    ])
    inside, whole = (area.float() for area in tables.box_areas(boxes, inds))
    return torch.where(whole > 0, inside / whole.clamp(min=1),
                       torch.zeros_like(inside))


def gt_area_ratios(boxes: Tensor, gt_inds: Tensor, masks: Masks) -> Tensor:
    """:func:`area_ratios` of one image."""
    return area_ratios([boxes], [gt_inds], [masks])
