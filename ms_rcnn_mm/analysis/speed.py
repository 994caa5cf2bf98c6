"""Training-step time, inference time and peak memory of MS R-CNN against
its Mask R-CNN baseline and MMDetection's built-in MS R-CNN.

The three models (:mod:`.models`) share weights and inputs and are run
interleaved (A B C A B C ...): after ``warmup`` rounds, each of ``repeats``
rounds times one training step of every model, then one inference of every
model; the medians are reported. Inference keeps exactly 100 detections per
image, so the mask and MaskIoU heads always see 100 RoIs per image.

- Training step: ``loss`` forward, ``parse_losses`` and ``backward`` (no
  optimizer step, so the weights, and therefore the RoIs, stay the same).
- Peak memory: what one step adds to the memory in use before it. CUDA:
  ``torch.cuda.max_memory_allocated`` minus ``memory_allocated`` before the
  step. CPU (Linux): the process's resident-set high-water mark
  (``VmHWM``, reset through ``/proc/self/clear_refs`` before the step)
  minus its resident set before the step; :func:`release_freed_memory_to_os`
  makes glibc return large freed blocks to the system, so that the resident
  set follows the tensors alive.
"""
import contextlib
import copy
import ctypes
import ctypes.util
import os
import statistics
import time
import warnings
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from torch import nn

from .complexity import GIGA, MacCounter
from .models import BASELINE, MMDET, OURS

#: run order within a round: the baseline first
ORDER = (BASELINE, OURS, MMDET)
MODES = ('train', 'infer')
MASK_IOU_HEAD = 'roi_head.mask_iou_head'
MASK_HEAD = 'roi_head.mask_head'
MIB = 2**20
# glibc's mallopt parameter and the block size from which glibc maps (and,
# when freed, unmaps) memory of its own instead of keeping it in its heap
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD = 128 * 1024
_CLEAR_REFS = '/proc/self/clear_refs'
_RESET_HIGH_WATER_MARK = '5'


def release_freed_memory_to_os() -> bool:
    """Make glibc unmap freed blocks of 128 KiB and more (a fixed threshold
    instead of its adaptive one). Returns False where it cannot."""
    name = ctypes.util.find_library('c')
    try:
        libc = ctypes.CDLL(name)
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD))
    except (OSError, AttributeError, TypeError):
        return False


def _status_kib(field: str) -> int:
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field + ':'):
                return int(line.split()[1])
    raise RuntimeError(f'/proc/self/status has no {field}')


def cpu_peak_supported() -> bool:
    """Whether the resident-set high-water mark can be reset (Linux)."""
    return os.path.exists(_CLEAR_REFS) and os.access(_CLEAR_REFS, os.W_OK)


class PeakMemory:
    """Peak memory added by the code between :meth:`start` and :meth:`stop`.

    Args:
        device (torch.device): ``cuda`` uses torch's allocator statistics;
            ``cpu`` the process's resident set (Linux; ``None`` elsewhere).
    """

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == 'cuda'
        self.device = device
        self.supported = self.cuda or cpu_peak_supported()
        self._base = 0

    def start(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
        elif self.supported:
            with open(_CLEAR_REFS, 'w') as f:
                f.write(_RESET_HIGH_WATER_MARK)
            self._base = _status_kib('VmRSS') * 1024

    def stop(self) -> Optional[float]:
        """MiB added at the peak since :meth:`start` (None if unsupported)."""
        if self.cuda:
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        elif self.supported:
            peak = _status_kib('VmHWM') * 1024
        else:
            return None
        return (peak - self._base) / MIB


def autocast(device: torch.device, amp: bool):
    if not amp:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.float16)


def train_step(model: nn.Module, data: dict, device: torch.device,
               amp: bool) -> None:
    """One ``loss`` forward and backward (gradients reset first)."""
    model.train()
    model.zero_grad(set_to_none=True)
    with autocast(device, amp):
        losses = model(**data, mode='loss')
        loss, _ = model.parse_losses(losses)
    loss.backward()


def infer_step(model: nn.Module, data: dict, device: torch.device,
               amp: bool) -> None:
    """One ``predict`` forward."""
    model.eval()
    with torch.no_grad(), autocast(device, amp):
        model(**data, mode='predict')


STEPS: Dict[str, Callable] = dict(train=train_step, infer=infer_step)


def _sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def measure(step: Callable, model: nn.Module, data: dict,
            device: torch.device, amp: bool, memory: PeakMemory) -> tuple:
    """Seconds and peak MiB of one call of ``step``."""
    memory.start()
    _sync(device)
    start = time.perf_counter()
    step(model, data, device, amp)
    _sync(device)
    seconds = time.perf_counter() - start
    return seconds, memory.stop()


def count_macs(models: Dict[str, nn.Module], data: Dict[str, dict],
               device: torch.device) -> dict:
    """Multiply-adds of one step of each mode and model (untimed pass), the
    RoIs its MaskIoU (or mask) head saw, and the MaskIoU head's share."""
    result = {}
    for mode in MODES:
        result[mode] = {}
        for name, model in models.items():
            with MacCounter(model) as counter:
                STEPS[mode](model, copy.deepcopy(data[mode]), device, False)
            head = MASK_IOU_HEAD if MASK_IOU_HEAD in counter.rows else (
                MASK_HEAD)
            rest = counter.total(exclude=(MASK_IOU_HEAD, ))
            result[mode][name] = dict(
                gmacs=counter.total() / GIGA,
                mask_iou_gmacs=counter.macs.get(MASK_IOU_HEAD, 0) / GIGA,
                mask_iou_share=counter.macs.get(MASK_IOU_HEAD, 0) / rest,
                rois=counter.rows.get(head, 0))
    return result


def _ratio(value: Optional[float], base: Optional[float]) -> Optional[float]:
    if value is None or not base:
        return None
    return value / base


def paired_ratio(samples: List[float], base: List[float]) -> float:
    """Median over rounds of ``samples[i] / base[i]``: each round times
    the models back to back, so this ratio follows a machine whose speed
    drifts between rounds, which the ratio of medians does not."""
    return statistics.median(s / b for s, b in zip(samples, base))


def benchmark(models: Dict[str, nn.Module], data: Dict[str, dict],
              device: torch.device, repeats: int, warmup: int,
              amp: bool = False) -> dict:
    """Interleaved timing and memory of ``models`` (see the module doc).

    Args:
        models (dict[str, nn.Module]): :data:`ORDER` names to models on
            ``device``.
        data (dict[str, dict]): Preprocessed batches for ``'train'`` (with
            ground truth) and ``'infer'``.
        repeats (int): Measured rounds (medians over them).
        warmup (int): Unmeasured rounds first.
        amp (bool): float16 autocast (CUDA only).

    Returns:
        dict: ``{mode}_ms`` and ``{mode}_peak_mib`` per model (median time,
        maximum peak), ``ratios`` of each MS R-CNN to the baseline (of the
        medians, and ``{mode}_paired``: :func:`paired_ratio`), and the raw
        ``samples``.
    """
    memory = PeakMemory(device)
    names = [name for name in ORDER if name in models]
    samples = {mode: {name: [] for name in names} for mode in MODES}
    peaks = {mode: {name: [] for name in names} for mode in MODES}
    for round_ in range(warmup + repeats):
        for mode in MODES:
            for name in names:
                seconds, peak = measure(STEPS[mode], models[name],
                                        data[mode], device, amp, memory)
                if round_ >= warmup:
                    samples[mode][name].append(seconds * 1000)
                    peaks[mode][name].append(peak)
    result = dict(samples=samples, ratios={})
    for mode in MODES:
        result[f'{mode}_ms'] = {
            n: statistics.median(v) for n, v in samples[mode].items()}
        result[f'{mode}_peak_mib'] = {
            n: None if None in v else max(v) for n, v in peaks[mode].items()}
    for name in names:
        if name == BASELINE:
            continue
        result['ratios'][name] = {
            f'{mode}{suffix}': _ratio(result[key][name],
                                      result[key].get(BASELINE))
            for mode in MODES
            for suffix, key in (('', f'{mode}_ms'),
                                ('_mem', f'{mode}_peak_mib'))}
        result['ratios'][name].update({
            f'{mode}_paired': paired_ratio(samples[mode][name],
                                           samples[mode][BASELINE])
            for mode in MODES})
    return result


#: the columns of :func:`summary_rows`
SUMMARY_HEADER = ('model', 'train ms', 'train x', 'train x paired',
                  'infer ms', 'infer x', 'infer x paired', 'train peak MiB',
                  'infer peak MiB')


def summary_rows(result: dict) -> List[List[str]]:
    """Rows of the printed table (:data:`SUMMARY_HEADER`): model, times,
    ratios and peaks."""

    def fmt(value, pattern):
        return '' if value is None else pattern.format(value)

    rows = []
    for name in ORDER:
        if name not in result['train_ms']:
            continue
        ratio = result['ratios'].get(name, {})
        rows.append([
            name,
            fmt(result['train_ms'][name], '{:.0f}'),
            fmt(ratio.get('train'), '{:.3f}x'),
            fmt(ratio.get('train_paired'), '{:.3f}x'),
            fmt(result['infer_ms'][name], '{:.0f}'),
            fmt(ratio.get('infer'), '{:.3f}x'),
            fmt(ratio.get('infer_paired'), '{:.3f}x'),
            fmt(result['train_peak_mib'][name], '{:.0f}'),
            fmt(result['infer_peak_mib'][name], '{:.0f}'),
        ])
    return rows


#: what torch's CUDA synchronisation debug mode warns with
SYNC_WARNING = 'called a synchronizing CUDA operation'


def cuda_synchronisations(fn: Callable[[], Any]) -> Tuple[Any, int]:
    """Run ``fn`` and count the synchronising CUDA calls it makes (those
    torch's ``set_sync_debug_mode('warn')`` reports).

    Returns:
        tuple: ``fn()``'s result and the number of synchronisations.
    """
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode('warn')
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always')
            result = fn()
    finally:
        torch.cuda.set_sync_debug_mode('default')
    return result, sum(SYNC_WARNING in str(w.message) for w in caught)
