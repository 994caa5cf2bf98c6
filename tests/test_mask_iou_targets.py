"""MaskIoU targets: brute-force reference, mmdet parity, polygons, edge
cases, on the compiled kernel and on the portable path."""
import math
import re
import subprocess
import sys
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from helpers import REPO
from mmdet.models.roi_heads.mask_heads import MaskIoUHead as MMDetMaskIoUHead
from mmdet.structures.mask import BitmapMasks, PolygonMasks
from mmengine.config import ConfigDict
from mmengine.structures import InstanceData

from ms_rcnn_mm.analysis.speed import cuda_synchronisations
from ms_rcnn_mm.models import MaskIoUHead, area_ratio, gt_area_ratios
from ms_rcnn_mm.models.area_ratio import (NO_KERNEL_ENV, SummedAreaTables,
                                          bitmap_crops, boxes_on_host)

MASK_SIZE = 28
TRAIN_CFG = ConfigDict(mask_thr_binary=0.5)
KERNEL = area_ratio._box_areas


@pytest.fixture(params=['kernel', 'portable'])
def host_path(request, monkeypatch):
    """Runs a test with the compiled kernel and with the portable path
    (forced by ``MS_RCNN_MM_NO_KERNEL=1``, as a machine without a C compiler
    gets it) for bitmap masks."""
    monkeypatch.setattr(area_ratio, '_WARNED', set())
    if request.param == 'portable':
        monkeypatch.setenv(NO_KERNEL_ENV, '1')
    else:
        monkeypatch.delenv(NO_KERNEL_ENV, raising=False)
        assert area_ratio.kernel_enabled(), 'the kernel was not built'
    return request.param


def ragged_masks(rng, num, height, width):
    """Random blobs: unions of a few rectangles and discs, some empty."""
    yy, xx = np.mgrid[:height, :width]
    masks = np.zeros((num, height, width), np.uint8)
    for m in masks[1:]:  # instance 0 stays empty (zero-area GT)
        for _ in range(rng.integers(1, 4)):
            cx, cy = rng.uniform(0, width), rng.uniform(0, height)
            r = rng.uniform(2, min(height, width) / 3)
            if rng.random() < 0.5:
                m[(xx - cx)**2 + (yy - cy)**2 <= r * r] = 1
            else:
                m[(abs(xx - cx) <= r) & (abs(yy - cy) <= r / 2)] = 1
    return masks


def random_boxes(rng, num, height, width, integer):
    x1 = rng.uniform(-10, width - 2, num)
    y1 = rng.uniform(-10, height - 2, num)
    x2 = x1 + rng.uniform(0, width / 2, num)
    y2 = y1 + rng.uniform(0, height / 2, num)
    boxes = np.stack([x1, y1, x2, y2], 1)
    if integer:
        boxes = np.clip(np.round(boxes), 0, [width, height, width, height])
    return torch.tensor(boxes, dtype=torch.float32)


def jittered_boxes(rng, masks, inds, integer):
    """Boxes around each assigned instance (random ones for empty masks),
    as proposals of IoU >= ~0.5 are; float unless ``integer``."""
    height, width = masks.shape[1:]
    boxes = random_boxes(rng, len(inds), height, width, integer=False)
    for k, g in enumerate(inds.tolist()):
        ys, xs = np.nonzero(masks[g])
        if len(xs):
            tight = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
            size = np.tile(tight[2:] - tight[:2], 2)
            boxes[k] = torch.as_tensor(tight + rng.normal(0, 0.2, 4) * size)
    if integer:
        boxes = boxes.round().clamp(min=0)
        boxes[:, 0::2] = boxes[:, 0::2].clamp(max=width)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(max=height)
    return boxes


def reference_ratio(box, mask):
    """Pixels whose centre lies in the box, counted one proposal at a time."""
    height, width = mask.shape
    x0, x1 = (min(max(math.ceil(v - 0.5), 0), width) for v in box[0::2])
    y0, y1 = (min(max(math.ceil(v - 0.5), 0), height) for v in box[1::2])
    inside = mask[y0:max(y1, y0), x0:max(x1, x0)].sum()
    whole = mask.sum()
    return inside / whole if whole > 0 else 0.0


def reference_targets(boxes, gt_inds, masks, logits, targets, thr):
    out = []
    for box, g, logit, target in zip(boxes.tolist(), gt_inds.tolist(),
                                     logits.numpy(), targets.numpy()):
        ratio = reference_ratio(box, masks[g])
        pred = (1 / (1 + np.exp(-logit.astype(np.float64)))) > thr
        if ratio == 0:  # the instance has no pixel inside the proposal
            out.append(0.0)
            continue
        overlap = (pred * target).sum()
        union = pred.sum() + target.sum() / ratio - overlap
        out.append(overlap / union if union > 0 else 0.0)
    return torch.tensor(out, dtype=torch.float32)


def make_case(seed, integer, num_images=2, num_pos=40, size=(60, 80)):
    rng = np.random.default_rng(seed)
    samples, gts, masks_np = [], [], []
    for _ in range(num_images):
        masks = ragged_masks(rng, 6, *size)
        inds = torch.as_tensor(rng.integers(0, 6, num_pos))
        boxes = jittered_boxes(rng, masks, inds, integer)
        samples.append(SimpleNamespace(pos_priors=boxes,
                                       pos_assigned_gt_inds=inds))
        gts.append(InstanceData(masks=BitmapMasks(masks, *size)))
        masks_np.append(masks)
    n = num_images * num_pos
    logits = torch.as_tensor(rng.normal(0, 2, (n, MASK_SIZE, MASK_SIZE)),
                             dtype=torch.float32)
    targets = torch.as_tensor(rng.random((n, MASK_SIZE, MASK_SIZE)) < 0.4,
                              dtype=torch.float32)
    return samples, gts, masks_np, logits, targets


def expected(samples, masks_np, logits, targets, thr):
    boxes = torch.cat([s.pos_priors for s in samples])
    inds = torch.cat([s.pos_assigned_gt_inds for s in samples])
    owners = np.concatenate(
        [np.full(len(s.pos_priors), i) for i, s in enumerate(samples)])
    out = []
    for i in range(len(boxes)):
        out.append(reference_targets(
            boxes[i:i + 1], inds[i:i + 1], masks_np[owners[i]],
            logits[i:i + 1], targets[i:i + 1], thr))
    return torch.cat(out)


@pytest.mark.parametrize('integer', [True, False])
@pytest.mark.parametrize('thr', [0.5, 0.3])
def test_targets_match_brute_force_reference(integer, thr, host_path):
    samples, gts, masks_np, logits, targets = make_case(1, integer)
    head = MaskIoUHead(num_classes=3)
    got = head.get_targets(samples, gts, logits, targets,
                           ConfigDict(mask_thr_binary=thr))
    want = expected(samples, masks_np, logits, targets, thr)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
    assert ((got > 0.2) & (got < 1)).sum() > len(got) // 2  # non-trivial


def test_binarises_probabilities_not_logits():
    """A logit of 0.3 is a probability of 0.57: inside the mask at 0.5.

    mmdet 3.3.0 thresholds the logits, so it drops that pixel."""
    box = torch.tensor([[0., 0., 28., 28.]])
    samples = [SimpleNamespace(pos_priors=box,
                               pos_assigned_gt_inds=torch.tensor([0]))]
    gt_mask = np.ones((1, 28, 28), np.uint8)
    gts = [InstanceData(masks=BitmapMasks(gt_mask, 28, 28))]
    logits = torch.full((1, 28, 28), -4.0)
    logits[:, :, :14] = 0.3  # left half predicted at p = 0.574
    targets = torch.ones(1, 28, 28)
    ours = MaskIoUHead(num_classes=1).get_targets(samples, gts, logits,
                                                  targets, TRAIN_CFG)
    theirs = MMDetMaskIoUHead(num_classes=1).get_targets(
        samples, gts, logits, targets, TRAIN_CFG)
    assert ours.item() == pytest.approx(0.5, abs=1e-6)
    assert theirs.item() == pytest.approx(0.0, abs=1e-6)


def test_matches_mmdet_with_logit_threshold_zero_on_integer_boxes():
    """mmdet at mask_thr_binary=0.0 binarises as we do at p=0.5."""
    samples, gts, _, logits, targets = make_case(2, integer=True)
    for s in samples:  # mmdet crops at least one pixel: avoid empty boxes
        s.pos_priors[:, 2:] = torch.maximum(s.pos_priors[:, 2:],
                                            s.pos_priors[:, :2] + 1)
    ours = MaskIoUHead(num_classes=3).get_targets(samples, gts, logits,
                                                  targets, TRAIN_CFG)
    theirs = MMDetMaskIoUHead(num_classes=3).get_targets(
        samples, gts, logits, targets, ConfigDict(mask_thr_binary=0.0))
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=0)


def test_any_proposal_gives_finite_targets_in_unit_interval(host_path):
    rng = np.random.default_rng(3)
    height, width = 50, 70
    masks = ragged_masks(rng, 4, height, width)
    masks[2] = 0  # a second zero-area instance
    boxes = torch.tensor(
        [[-30, -30, -5, -5],  # outside the image
         [10, 10, 10, 10],  # zero area
         [20.7, 5.2, 20.9, 40.1],  # thinner than a pixel centre
         [0, 0, width, height],  # the whole image
         [60, 40, 200, 300],  # crosses the border
         [5, 5, 30, 30]], dtype=torch.float32)
    boxes = boxes.repeat(4, 1)
    inds = torch.arange(4).repeat_interleave(6)
    samples = [SimpleNamespace(pos_priors=boxes, pos_assigned_gt_inds=inds)]
    gts = [InstanceData(masks=BitmapMasks(masks, height, width))]
    logits = torch.as_tensor(rng.normal(0, 3, (24, 28, 28)),
                             dtype=torch.float32)
    for targets in (torch.zeros(24, 28, 28), torch.ones(24, 28, 28)):
        got = MaskIoUHead(num_classes=1).get_targets(samples, gts, logits,
                                                     targets, TRAIN_CFG)
        assert torch.isfinite(got).all()
        assert ((got >= 0) & (got <= 1)).all()
        want = reference_targets(boxes, inds, masks, logits, targets, 0.5)
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
    # zero-area instances and boxes that miss the instance: ratio 0
    ratios = gt_area_ratios(boxes, inds, BitmapMasks(masks, height, width))
    assert (ratios[inds == 0] == 0).all() and (ratios[inds == 2] == 0).all()
    assert (ratios[0::6] == 0).all()


def random_polygons(rng, num, height, width):
    polys = []
    for _ in range(num):
        cx, cy = rng.uniform(10, width - 10), rng.uniform(10, height - 10)
        k = int(rng.integers(3, 9))
        angles = np.sort(rng.uniform(0, 2 * np.pi, k))
        radius = rng.uniform(3, 25, k)
        pts = np.stack([cx + radius * np.cos(angles),
                        cy + radius * np.sin(angles)], 1)
        polys.append([pts.ravel()])
    return PolygonMasks(polys, height, width)


def test_polygon_masks_give_the_targets_of_their_bitmaps():
    rng = np.random.default_rng(4)
    height, width = 90, 120
    polygons = random_polygons(rng, 8, height, width)
    bitmaps = polygons.to_bitmap()
    inds = torch.as_tensor(rng.integers(0, 8, 64))
    gt_boxes = torch.as_tensor(bitmaps.get_bboxes('hbox').tensor)[inds]
    size = (gt_boxes[:, 2:] - gt_boxes[:, :2]).repeat(1, 2)
    boxes = gt_boxes + torch.as_tensor(
        rng.normal(0, 0.2, (64, 4)), dtype=torch.float32) * size
    from_polygons = gt_area_ratios(boxes, inds, polygons)
    from_bitmaps = gt_area_ratios(boxes, inds, bitmaps)
    torch.testing.assert_close(from_polygons, from_bitmaps, atol=1e-6,
                               rtol=0)
    want = torch.tensor([
        reference_ratio(b, bitmaps.masks[g])
        for b, g in zip(boxes.tolist(), inds.tolist())
    ], dtype=torch.float32)
    torch.testing.assert_close(from_bitmaps, want, atol=1e-6, rtol=0)
    assert ((from_bitmaps > 0) & (from_bitmaps < 1)).sum() > 32


def test_tensor_masks_and_empty_inputs(host_path):
    rng = np.random.default_rng(5)
    masks = ragged_masks(rng, 5, 40, 40)
    boxes = random_boxes(rng, 30, 40, 40, integer=False)
    inds = torch.as_tensor(rng.integers(0, 5, 30))
    torch.testing.assert_close(
        gt_area_ratios(boxes, inds, torch.from_numpy(masks)),
        gt_area_ratios(boxes, inds, BitmapMasks(masks, 40, 40)))
    empty = gt_area_ratios(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long),
                           BitmapMasks(masks, 40, 40))
    assert empty.shape == (0, )
    no_gt = BitmapMasks(np.zeros((0, 40, 40), np.uint8), 40, 40)
    assert gt_area_ratios(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long),
                          no_gt).shape == (0, )


def test_half_precision_inputs_give_float32_targets():
    samples, gts, masks_np, logits, targets = make_case(6, integer=False)
    got = MaskIoUHead(num_classes=3).get_targets(samples, gts, logits.half(),
                                                 targets.half(), TRAIN_CFG)
    assert got.dtype == torch.float32
    want = expected(samples, masks_np, logits.half().float(), targets, 0.5)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)


def brute_force_areas(masks, boxes, inds):
    """Nonzero pixels of each box's instance inside it, and in all."""
    inside, whole = [], []
    for box, g in zip(boxes.tolist(), inds.tolist()):
        height, width = masks[g].shape
        x0, x1 = (min(max(math.ceil(v - 0.5), 0), width) for v in box[0::2])
        y0, y1 = (min(max(math.ceil(v - 0.5), 0), height)
                  for v in box[1::2])
        inside.append(np.count_nonzero(masks[g][y0:y1, x0:x1]))
        whole.append(np.count_nonzero(masks[g]))
    return np.array(inside), np.array(whole)


@pytest.mark.parametrize('value', [1, 255])
@pytest.mark.parametrize('height,width', [(37, 61), (20, 8), (9, 131),
                                          (64, 96), (7, 6), (6, 33)])
def test_kernel_and_tables_count_the_pixels_of_any_mask_width(
        height, width, value):
    """Widths with and without a remainder of 8 and 32 pixels (the kernel
    reads rows 32 pixels at a time), instances with no pixel, with every
    pixel, and with no box; boxes anywhere; masks of 0/1 and of 0/255 bytes.
    Catches a row scan that reads 0/255 bytes as a negative word, and tables
    that sum byte values instead of counting pixels."""
    rng = np.random.default_rng(height * 1000 + width)
    masks = ragged_masks(rng, 7, height, width)
    masks[1] = 1  # every pixel
    masks[2, rng.integers(0, height), rng.integers(0, width)] = 1  # one
    masks *= value
    inds = rng.integers(0, 6, 50)  # instance 6 has no box
    boxes = random_boxes(rng, 50, height, width, integer=False).numpy()
    # mirrored left-right or upside down: no pixel inside
    boxes[::5] = boxes[::5, [2, 1, 0, 3]]
    boxes[1::5] = boxes[1::5, [0, 3, 2, 1]]
    want = brute_force_areas(masks, boxes, inds)
    assert want[0].min() == 0 and want[0].max() > 0
    got = area_ratio.kernel_box_areas(masks, boxes, inds)
    tables = SummedAreaTables.from_crops(bitmap_crops(masks))
    for areas in (got, tables.box_areas(boxes, inds)):
        np.testing.assert_array_equal(areas[0], want[0])
        np.testing.assert_array_equal(areas[1], want[1])


#: an 8x8 square in a 16x16 image, a box over its top-left quarter and one
#: over the whole image (the case of issue 17)
SQUARE = np.zeros((1, 16, 16), np.uint8)
SQUARE[0, 4:12, 4:12] = 1
QUARTER_AND_WHOLE = torch.tensor([[0., 0., 8., 8.], [0., 0., 16., 16.]])


@pytest.mark.parametrize('dtype,pixel', [(np.uint8, 1), (np.uint8, 255),
                                         (np.bool_, True)],
                         ids=['0-1', '0-255', 'bool'])
def test_square_gives_a_quarter_and_all_whatever_its_mask_values(
        dtype, pixel, host_path):
    """0/1 and 0/255 bytes and booleans give ratios 0.25 and 1 on both
    paths; catches any path that reads a 255 byte as no pixel (the portable
    path gave [0, 0] before) or as 255 pixels."""
    masks = np.where(SQUARE != 0, pixel, 0).astype(dtype)
    got = gt_area_ratios(QUARTER_AND_WHOLE, torch.tensor([0, 0]),
                         BitmapMasks(masks, 16, 16))
    assert got.tolist() == [0.25, 1.0]


@pytest.mark.parametrize('dtype,pixel', [(np.uint8, 255), (np.int8, -1),
                                         (np.bool_, True), (np.int64, 7),
                                         (np.float32, 0.5)])
def test_any_nonzero_mask_value_is_a_pixel(dtype, pixel, host_path):
    """Random masks of any value and type give the ratios of their 0/1
    masks; catches a path that thresholds values (``> 0`` on signed words
    or bytes, ``>= 1`` on floats) or sums them."""
    rng = np.random.default_rng(11)
    masks = ragged_masks(rng, 5, 30, 45)
    inds = torch.as_tensor(rng.integers(0, 5, 40))
    boxes = jittered_boxes(rng, masks, inds, integer=False)
    want = torch.tensor([reference_ratio(b, masks[g])
                         for b, g in zip(boxes.tolist(), inds.tolist())],
                        dtype=torch.float32)
    assert ((want > 0) & (want < 1)).sum() > 10
    scaled = np.where(masks != 0, pixel, 0).astype(dtype)
    got = gt_area_ratios(boxes, inds, BitmapMasks(scaled, 30, 45))
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)


def test_kernel_runs_on_torch_threads(monkeypatch):
    """The kernel takes torch.get_num_threads() threads, from the one OpenMP
    runtime of the process (torch's), so it never oversubscribes the
    cores torch's workers spin on."""
    monkeypatch.delenv(NO_KERNEL_ENV, raising=False)
    assert area_ratio.kernel_enabled()
    teams = []

    class Spy:

        @staticmethod
        def box_areas(*args):
            teams.append(KERNEL.box_areas(*args))
            return teams[-1]

    monkeypatch.setattr(area_ratio, '_box_areas', Spy)
    rng = np.random.default_rng(12)
    masks = ragged_masks(rng, 6, 40, 40)
    boxes = random_boxes(rng, 30, 40, 40, integer=False).numpy()
    inds = rng.integers(0, 6, 30)
    threads = torch.get_num_threads()
    try:
        for wanted in (1, 2):
            torch.set_num_threads(wanted)
            area_ratio.kernel_box_areas(masks, boxes, inds)
    finally:
        torch.set_num_threads(threads)
    assert teams == [1, 2]
    with open('/proc/self/maps') as maps:
        runtimes = {line.split()[-1] for line in maps if 'libgomp' in line}
    assert len(runtimes) == 1, runtimes


def test_kernel_rejects_inconsistent_input():
    masks = np.zeros((3, 10, 12), np.uint8)
    boxes = np.zeros((4, 4), np.float32)
    with pytest.raises(IndexError, match=r'indices 0\.\.3 for 3 instances'):
        area_ratio.kernel_box_areas(masks, boxes, np.array([0, 1, 2, 3]))
    corners = np.zeros((4, 4), np.int64)
    inside, whole = np.zeros(4, np.int64), np.zeros(3, np.int64)
    with pytest.raises(ValueError, match='masks: 360 bytes, expected 363'):
        KERNEL.box_areas(masks, (3, 11, 11), corners, np.array([0, 1, 2, 4]),
                         inside, whole, 1)
    with pytest.raises(ValueError, match='starts must rise'):
        KERNEL.box_areas(masks, masks.shape, corners, np.array([0, 3, 2, 4]),
                         inside, whole, 1)


class RefusingKernel:
    """Stands for the compiled kernel where a test expects it unused."""

    @staticmethod
    def box_areas(*args):
        raise AssertionError('the compiled kernel was called')


def case_of_one_image(seed):
    rng = np.random.default_rng(seed)
    masks = BitmapMasks(ragged_masks(rng, 4, 20, 30), 20, 30)
    boxes = random_boxes(rng, 10, 20, 30, integer=False)
    inds = torch.as_tensor(rng.integers(0, 4, 10))
    return boxes, inds, masks


def our_warnings(compute):
    """``compute()`` and the messages of the warnings of ms_rcnn_mm it
    gave (other libraries' deprecation warnings left out)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        result = compute()
    return result, [str(w.message) for w in caught
                    if str(w.message).startswith('ms_rcnn_mm')]


def assert_warns_once(match, compute):
    """``compute()`` warns with ``match`` the first time only."""
    first, said = our_warnings(compute)
    assert len(said) == 1 and re.search(match, said[0]), said
    again, said = our_warnings(compute)
    assert said == []
    torch.testing.assert_close(again, first, atol=0, rtol=0)
    return first


def test_no_kernel_variable_forces_the_portable_path_and_says_so_once(
        monkeypatch):
    """``MS_RCNN_MM_NO_KERNEL=1``: the kernel is never called (catches a
    variable that is ignored), the warning names the variable, once, and
    the ratios are the kernel's; other values keep the kernel."""
    boxes, inds, masks = case_of_one_image(13)
    monkeypatch.delenv(NO_KERNEL_ENV, raising=False)
    want = gt_area_ratios(boxes, inds, masks)
    monkeypatch.setattr(area_ratio, '_box_areas', RefusingKernel)
    monkeypatch.setattr(area_ratio, '_WARNED', set())
    monkeypatch.setenv(NO_KERNEL_ENV, '1')
    got = assert_warns_once(f'{NO_KERNEL_ENV}=1 is set',
                            lambda: gt_area_ratios(boxes, inds, masks))
    torch.testing.assert_close(got, want, atol=0, rtol=0)
    monkeypatch.setenv(NO_KERNEL_ENV, '0')
    with pytest.raises(AssertionError, match='compiled kernel was called'):
        gt_area_ratios(boxes, inds, masks)


def test_portable_path_says_once_that_the_kernel_is_missing(monkeypatch):
    """An install without the kernel gets the kernel's ratios, and one
    warning with the import error; catches a silent fallback or a warning
    at every call."""
    boxes, inds, masks = case_of_one_image(13)
    monkeypatch.delenv(NO_KERNEL_ENV, raising=False)
    want = gt_area_ratios(boxes, inds, masks)
    monkeypatch.setattr(area_ratio, '_box_areas', None)
    monkeypatch.setattr(area_ratio, '_WARNED', set())
    monkeypatch.setattr(area_ratio, '_KERNEL_ERROR', 'no module _box_areas')
    got = assert_warns_once('kernel is missing .no module',
                            lambda: gt_area_ratios(boxes, inds, masks))
    torch.testing.assert_close(got, want, atol=0, rtol=0)


def test_polygons_take_the_portable_path_without_warning(monkeypatch):
    """Polygon masks never reach the kernel (it reads bitmaps) and need no
    warning for that; catches polygons handed to the kernel, or a warning
    about a choice the user did not make."""
    monkeypatch.delenv(NO_KERNEL_ENV, raising=False)
    monkeypatch.setattr(area_ratio, '_box_areas', RefusingKernel)
    polygons = PolygonMasks([[np.array([4., 4., 12., 4., 12., 12., 4., 12.])]],
                            16, 16)
    bitmap = polygons.to_bitmap().masks[0]
    want = [reference_ratio(b, bitmap) for b in QUARTER_AND_WHOLE.tolist()]
    got, said = our_warnings(lambda: gt_area_ratios(
        QUARTER_AND_WHOLE, torch.tensor([0, 0]), polygons))
    assert said == []
    assert got.tolist() == pytest.approx(want, abs=1e-6)
    assert 0 < want[0] < want[1] == 1


def test_boxes_come_to_the_host_as_one_array_split_by_image():
    """Rows (x1, y1, x2, y2, index) per image, images without boxes
    included; catches a split at the wrong image or lost indices."""
    boxes = [torch.arange(8.).reshape(2, 4), torch.zeros(0, 4),
             torch.arange(12.).reshape(3, 4) + 0.25]
    inds = [torch.tensor([3, 1]), torch.zeros(0, dtype=torch.long),
            torch.tensor([0, 2, 5])]
    rows = boxes_on_host(boxes, inds)
    assert [r.shape for r in rows] == [(2, 5), (0, 5), (3, 5)]
    for got, image_boxes, image_inds in zip(rows, boxes, inds):
        np.testing.assert_array_equal(got[:, :4], image_boxes.numpy())
        np.testing.assert_array_equal(got[:, 4], image_inds.numpy())


@pytest.mark.parametrize('path', ['compiled kernel', 'portable'])
def test_speed_benchmark_runs_both_paths_and_agrees_with_mmdet(path):
    """The benchmark of the docs' table, on a small case: it reports the
    path it timed, both speed-ups, and our targets equal mmdet's."""
    command = [
        sys.executable,
        str(REPO / 'tools' / 'analysis_tools' /
            'benchmark_mask_iou_targets.py'), '--images', '1', '--height',
        '512', '--width', '512', '--instances', '4', '--positives', '24',
        '--repeats', '2'
    ] + (['--no-kernel'] if path == 'portable' else [])
    out = subprocess.run(command, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    assert f'host path: {path}' in out.stdout
    assert len(re.findall(r'ms +\d+\.\dx\n', out.stdout)) == 2
    diff = re.search(r'max \|ours - mmdet\| = (\S+)', out.stdout).group(1)
    assert float(diff) < 1e-4


@pytest.mark.cuda
@pytest.mark.parametrize('masks_on', ['host', 'device'])
def test_cuda_targets_match_the_cpu_ones_with_one_copy_per_batch(masks_on):
    """Proposals on the GPU with host masks, and with masks on the GPU: the
    targets of the CPU, with one synchronising copy for the batch's boxes
    (plus one per image for masks on the GPU, which are copied to the host);
    catches a copy per proposal or per image."""
    samples, gts, _, logits, targets = make_case(9, integer=False)
    want = MaskIoUHead().get_targets(samples, gts, logits, targets,
                                     TRAIN_CFG)
    cuda = torch.device('cuda')
    samples = [SimpleNamespace(pos_priors=s.pos_priors.to(cuda),
                               pos_assigned_gt_inds=s.pos_assigned_gt_inds.to(
                                   cuda)) for s in samples]
    copies = 1
    if masks_on == 'device':
        gts = [InstanceData(masks=torch.from_numpy(g.masks.masks).to(cuda))
               for g in gts]
        copies += len(gts)
    head = MaskIoUHead().to(cuda)
    logits, targets = logits.to(cuda), targets.to(cuda)
    got, syncs = cuda_synchronisations(lambda: head.get_targets(
        samples, gts, logits, targets, TRAIN_CFG))
    assert got.device.type == 'cuda'
    torch.testing.assert_close(got.cpu(), want, atol=1e-6, rtol=1e-5)
    assert syncs == copies
