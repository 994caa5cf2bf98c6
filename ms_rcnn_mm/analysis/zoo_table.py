"""The model-zoo table, from the result files of real runs only.

Input: a metafile (``configs/ms-rcnn/metafile.yml``) and the folder holding
the work dirs. As ``tools/train.py`` names them by default, the work dir of
a model is ``<root>/<model name>`` and that of its Mask R-CNN baseline
``<baseline root>/<stem of its Baseline Config>`` (for
``mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py``:
``mask-rcnn_r50_fpn_1x_coco``).

What is read from a work dir (mmengine 0.10 layout, one ``<timestamp>/``
folder per run):

- training runs, ``<ts>/vis_data/scalars.json``: ``memory`` (MiB, logged on
  CUDA) -> Mem (GB), the maximum over the latest run that logged it; the
  last validation's ``coco/bbox_mAP`` and ``coco/segm_mAP``;
- test runs (``tools/test.py``), ``<ts>/<ts>.json``: ``coco/bbox_mAP``,
  ``coco/segm_mAP`` (these take precedence over validation) and ``time``,
  the mean seconds per test iteration -> Inf time (fps) = test batch size
  (from the run's ``<ts>/vis_data/config.py``) / ``time``;
- ``Weights`` of the metafile entry -> Download;
- Backbone, Style and Lr schd from the config the latest run dumped, or
  the metafile's config when there is no run.

A cell whose value no file holds stays empty; nothing is estimated.
"""
import csv
import io
import json
import os.path as osp
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import yaml
from mmengine.config import Config

COLUMNS = ('Backbone', 'Style', 'Lr schd', 'Mem (GB)', 'Inf time (fps)',
           'box AP', 'mask AP', 'mask AP of the Mask R-CNN baseline', 'gain',
           'Config', 'Download')
BOX_KEY, MASK_KEY = 'coco/bbox_mAP', 'coco/segm_mAP'
MIB_PER_GB = 1024
#: epochs of mmdet's named schedules
SCHEDULES = {12: '1x', 24: '2x', 36: '3x'}


@dataclass
class RunResults:
    """What the result files of one work dir hold (None: not measured)."""
    mem_gb: Optional[float] = None
    fps: Optional[float] = None
    box_ap: Optional[float] = None
    mask_ap: Optional[float] = None
    sources: List[str] = field(default_factory=list)


def read_json_lines(path: Path) -> List[dict]:
    """The JSON objects of a log, one per line.

    Raises:
        ValueError: a line is not a JSON object (names file and line).
    """
    records = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f'{path}:{number}: not JSON ({error.msg}): '
                             f'{line[:80]!r}') from None
        if not isinstance(record, dict):
            raise ValueError(f'{path}:{number}: expected a JSON object, got '
                             f'{type(record).__name__}')
        records.append(record)
    return records


def _last(records: List[dict], key: str) -> Optional[float]:
    values = [r[key] for r in records if r.get(key) is not None]
    return float(values[-1]) if values else None


def _test_batch_size(run: Path) -> Optional[int]:
    dumped = run / 'vis_data' / 'config.py'
    if not dumped.is_file():
        return None
    return int(Config.fromfile(str(dumped)).test_dataloader.batch_size)


def read_work_dir(work_dir: Path) -> RunResults:
    """Results of the runs in ``work_dir`` (empty if it does not exist).

    The latest run holding a value gives it; a test run's APs take
    precedence over a validation's.
    """
    results = RunResults()
    if not work_dir.is_dir():
        return results
    validation = test = (None, None)
    for run in sorted(p for p in work_dir.iterdir() if p.is_dir()):
        scalars = run / 'vis_data' / 'scalars.json'
        test_log = run / f'{run.name}.json'
        if scalars.is_file():
            records = read_json_lines(scalars)
            memory = [r['memory'] for r in records if 'memory' in r]
            if memory:
                results.mem_gb = max(memory) / MIB_PER_GB
            if _last(records, MASK_KEY) is not None:
                validation = (_last(records, BOX_KEY),
                              _last(records, MASK_KEY))
            results.sources.append(str(scalars))
        elif test_log.is_file():
            records = read_json_lines(test_log)
            if _last(records, MASK_KEY) is None:
                continue
            test = (_last(records, BOX_KEY), _last(records, MASK_KEY))
            seconds, batch = _last(records, 'time'), _test_batch_size(run)
            if seconds and batch:
                results.fps = batch / seconds
            results.sources.append(str(test_log))
    results.box_ap, results.mask_ap = (
        test if test[1] is not None else validation)
    return results


def describe_config(cfg: Config) -> Dict[str, str]:
    """Backbone, Style and Lr schd of a config, as mmdet's tables write
    them (``R-50``, ``X-101-32x4d``, ``+ DCN``; ``pytorch``; ``1x``)."""
    backbone = cfg.model.backbone
    letter = 'X' if 'ResNeXt' in backbone.type else 'R'
    name = f"{letter}-{backbone.get('depth', '')}"
    if letter == 'X':
        name += f"-{backbone.groups}x{backbone.base_width}d"
    dcn = backbone.get('dcn')
    if dcn:
        name += ' + DCNv2' if dcn.get('type') == 'DCNv2' else ' + DCN'
    loop = cfg.train_cfg
    if 'max_epochs' in loop:
        epochs = loop.max_epochs
        schedule = SCHEDULES.get(epochs, f'{epochs}e')
    else:
        schedule = f"{loop.get('max_iters', '')} iters"
    return {'Backbone': name, 'Style': backbone.get('style', 'pytorch'),
            'Lr schd': schedule}


def load_models(metafile: Path) -> List[dict]:
    """The metafile's ``Models``, checked for the fields the table needs.

    Raises:
        ValueError: the file has no ``Models`` or an entry lacks ``Name``,
            ``Config`` or ``Metadata: Baseline Config``.
    """
    data = yaml.safe_load(metafile.read_text()) or {}
    models = data.get('Models')
    if not models:
        raise ValueError(f'{metafile}: no Models')
    for index, model in enumerate(models):
        missing = [k for k in ('Name', 'Config') if not model.get(k)]
        if not (model.get('Metadata') or {}).get('Baseline Config'):
            missing.append('Metadata: Baseline Config')
        if missing:
            raise ValueError(f'{metafile}: Models[{index}] '
                             f"({model.get('Name', '?')}) has no "
                             f"{', '.join(missing)}")
    return models


def config_path(metafile: Path, config: str) -> Path:
    """A metafile's ``Config`` entry (relative to the folder holding
    ``configs/``, two levels above the metafile) as a path."""
    path = Path(config)
    return path if path.is_absolute() else metafile.parents[2] / path


def load_config_ref(ref: str, metafile: Path) -> Config:
    """Load a metafile's config reference: a path (see :func:`config_path`)
    or ``package::path`` (``mmdet::mask_rcnn/...``), the latter resolved as
    a ``_base_`` of a config is, so both load the same way."""
    if '::' not in ref:
        return Config.fromfile(str(config_path(metafile, ref)))
    with tempfile.TemporaryDirectory() as tmp:
        leaf = Path(tmp, 'config.py')
        leaf.write_text(f'_base_ = {ref!r}\n')
        return Config.fromfile(str(leaf))


def run_config(work_dir: Path) -> Optional[Config]:
    """The config a work dir's latest run used (``tools/train.py`` and
    ``tools/test.py`` dump it, with ``--cfg-options`` applied)."""
    dumped = sorted(work_dir.glob('*/vis_data/config.py'))
    return Config.fromfile(str(dumped[-1])) if dumped else None


def baseline_dir_name(baseline_config: str) -> str:
    """``mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py`` ->
    ``mask-rcnn_r50_fpn_1x_coco`` (``tools/train.py``'s default)."""
    return Path(baseline_config.split('::')[-1]).stem


def _number(value: Optional[float], scale: float = 1.0,
            signed: bool = False) -> str:
    if value is None:
        return ''
    return f'{value * scale:+.1f}' if signed else f'{value * scale:.1f}'


def _download(model: dict) -> str:
    url = model.get('Weights')
    return f'[model]({url})' if url else ''


def build_rows(metafile: Path, root: Path,
               baseline_root: Optional[Path] = None,
               names: Optional[List[str]] = None,
               measured_only: bool = False) -> List[Dict[str, str]]:
    """One row per metafile model (``names`` only, if given).

    Returns:
        list[dict]: :data:`COLUMNS` to cell text, plus ``Name`` and
        ``Sources`` (the files the numbers came from).
    """
    baseline_root = baseline_root or root
    rows = []
    for model in load_models(metafile):
        if names and model['Name'] not in names:
            continue
        ours = read_work_dir(root / model['Name'])
        baseline = read_work_dir(baseline_root / baseline_dir_name(
            model['Metadata']['Baseline Config']))
        if measured_only and not ours.sources:
            continue
        gain = (ours.mask_ap - baseline.mask_ap
                if None not in (ours.mask_ap, baseline.mask_ap) else None)
        cfg = run_config(root / model['Name']) or Config.fromfile(
            str(config_path(metafile, model['Config'])))
        row = dict(Name=model['Name'], **describe_config(cfg))
        row.update({
            'Mem (GB)': _number(ours.mem_gb),
            'Inf time (fps)': _number(ours.fps),
            'box AP': _number(ours.box_ap, 100),
            'mask AP': _number(ours.mask_ap, 100),
            'mask AP of the Mask R-CNN baseline': _number(
                baseline.mask_ap, 100),
            'gain': _number(gain, 100, signed=True),
            'Config': model['Config'],
            'Download': _download(model),
            'Sources': ' '.join(ours.sources + baseline.sources),
        })
        rows.append(row)
    return rows


def to_markdown(rows: List[Dict[str, str]]) -> str:
    """A Markdown table; configs link to their file name, for a README next
    to them."""
    lines = ['| ' + ' | '.join(COLUMNS) + ' |',
             '|' + '---|' * len(COLUMNS)]
    for row in rows:
        cells = dict(row)
        cells['Config'] = (f"[config](./{osp.basename(row['Config'])})"
                           if row['Config'] else '')
        lines.append('| ' + ' | '.join(cells[c] for c in COLUMNS) + ' |')
    return '\n'.join(lines) + '\n'


def to_csv(rows: List[Dict[str, str]]) -> str:
    """CSV with :data:`COLUMNS`, then ``Name`` and ``Sources``."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(COLUMNS) +
                            ['Name', 'Sources'], lineterminator='\n')
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()
