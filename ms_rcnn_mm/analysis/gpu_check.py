"""The prepared GPU check (``scripts/gpu_check.sh``): one run, one budget,
one JSON file and one markdown table.

Steps, in this order, each a subprocess with a time limit cut from one
budget (:data:`BUDGET_S`, 8 minutes), its output in ``logs/<step>.log``:

- ``cuda_tests``: the tests marked ``cuda`` (skipped on machines without a
  GPU), ``pytest -m cuda``;
- ``targets``: the MaskIoU targets benchmark with the proposals on the GPU,
  against mmdet 3.3.0's, with the synchronising calls of each;
- ``speed`` and ``speed_amp``: the speed benchmark at 2x800x1333 without
  and with float16 autocast, for every config of :data:`SPEED_CONFIGS`
  plus ``--speed-config`` (each against its Mask R-CNN baseline and mmdet's
  MS R-CNN);
- ``train_amp``: ``--amp`` training of the R-50 config for 20 iterations on
  generated data (:mod:`ms_rcnn_mm.datasets.synthetic`), which ends in one
  checkpoint whose random state is checked.

A step that fails, times out or finds its budget spent is recorded as such
and the next one runs. ``--smoke`` runs every step on the CPU at toy sizes
(the ``--amp`` speed step is recorded as skipped; training runs without
``--amp``), so that the test suite checks the whole script on a machine
without a GPU.
"""
import argparse
import json
import os
import platform
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

REPO = Path(__file__).resolve().parents[2]
R50_CONFIG = 'configs/ms-rcnn/ms-rcnn-mm_r50_fpn_1x_coco.py'
CASCADE_CONFIG = 'configs/cascade-ms-rcnn/cascade-ms-rcnn_r50_fpn_1x_coco.py'
#: configs the speed steps time (``--speed-config`` adds more): the
#: standard head against Mask R-CNN and mmdet's MS R-CNN, the cascade
#: against Cascade Mask R-CNN
SPEED_CONFIGS: Tuple[str, ...] = (R50_CONFIG, CASCADE_CONFIG)
#: seconds the whole check may take on the GPU
BUDGET_S = 480
#: a step is not started with less than this left of the budget
MIN_STEP_S = 20
#: the steps, in the order they run
STEP_NAMES = ('cuda_tests', 'targets', 'speed', 'speed_amp', 'train_amp')
JSON_NAME = 'gpu_check.json'
MARKDOWN_NAME = 'gpu_check.md'
#: classes of the generated data (ms_rcnn_mm.datasets.synthetic.CLASSES)
SYNTHETIC_CLASSES = ('circle', 'triangle', 'square', 'star')
#: exit status of a check in which a step did not pass
FAILED_EXIT = 1


@dataclass(frozen=True)
class Sizes:
    """What each step runs at."""
    device: str
    shape: Tuple[int, int]  # speed benchmark input, (height, width)
    batch: int
    speed_repeats: int
    speed_warmup: int
    targets_args: Tuple[str, ...]
    train_iters: int
    train_images: int
    image_size: int  # generated images are square
    train_scale: Tuple[int, int]  # Resize scale (long, short side)
    train_workers: int
    amp: bool
    #: seconds per step: cuda_tests, targets, speed, speed_amp, train_amp
    timeouts: Tuple[int, int, int, int, int]


GPU_SIZES = Sizes(
    device='cuda', shape=(800, 1333), batch=2, speed_repeats=10,
    speed_warmup=3, targets_args=('--repeats', '30'), train_iters=20,
    train_images=40, image_size=512, train_scale=(1333, 800), train_workers=2,
    amp=True,
    timeouts=(120, 45, 90, 90, 120))
SMOKE_SIZES = Sizes(
    device='cpu', shape=(64, 96), batch=1, speed_repeats=1, speed_warmup=0,
    targets_args=('--images', '1', '--height', '512', '--width', '512',
                  '--instances', '3', '--positives', '8', '--repeats', '1'),
    train_iters=2, train_images=2, image_size=64, train_scale=(96, 64),
    train_workers=0, amp=False, timeouts=(300, 120, 300, 300, 300))


@dataclass
class Step:
    """One subprocess of the check and how to read what it produced."""
    name: str
    command: List[str]
    timeout_s: int
    collect: Callable[[], dict]
    skip_reason: str = ''


@dataclass
class StepResult:
    name: str
    status: str  # passed, failed, timeout, skipped, not run
    seconds: float
    command: str
    log: str
    result: dict
    reason: str = ''


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        '--out', default=os.environ.get('OUT') or 'work_dirs/gpu_check',
        help='folder for gpu_check.json, gpu_check.md and logs/ (default: '
        '$OUT if set, else %(default)s)')
    parser.add_argument('--smoke', action='store_true',
                        help='every step on the CPU at toy sizes')
    parser.add_argument('--budget-s', type=float, default=BUDGET_S,
                        help='seconds for the whole check (default: '
                        '%(default)s)')
    parser.add_argument('--steps', nargs='+', choices=STEP_NAMES,
                        default=list(STEP_NAMES),
                        help='run these steps only (default: all)')
    parser.add_argument('--speed-config', action='append', default=[],
                        help='another config for the speed steps (repeat '
                        'the option for more)')
    args = parser.parse_args(argv)
    if args.budget_s <= 0:
        parser.error(f'--budget-s must be positive, got {args.budget_s}')
    missing = [c for c in args.speed_config if not (REPO / c).is_file()
               and not Path(c).is_file()]
    if missing:
        parser.error(f'--speed-config: no such file: {", ".join(missing)}')
    return args


def python_command(*args: str) -> List[str]:
    return [sys.executable, *args]


def cuda_tests_step(out: Path, sizes: Sizes) -> Step:
    junit = out / 'logs' / 'cuda_tests.xml'
    return Step('cuda_tests', python_command(
        '-m', 'pytest', 'tests', '-m', 'cuda', '-v', '-rA',
        f'--junitxml={junit}'), sizes.timeouts[0],
        lambda: junit_counts(junit))


def junit_counts(path: Path) -> dict:
    """Counts and failed test names of a pytest JUnit XML report."""
    suite = ElementTree.parse(path).getroot()
    suite = suite if suite.tag == 'testsuite' else suite[0]
    failed = [f"{case.get('classname')}::{case.get('name')}"
              for case in suite.iter('testcase')
              if case.find('failure') is not None
              or case.find('error') is not None]
    counts = {key: int(suite.get(key, 0))
              for key in ('tests', 'failures', 'errors', 'skipped')}
    return dict(counts, failed=failed)


def targets_step(out: Path, sizes: Sizes) -> Step:
    result = out / 'targets.json'
    return Step('targets', python_command(
        'tools/analysis_tools/benchmark_mask_iou_targets.py', '--device',
        sizes.device, *sizes.targets_args, '--out', str(result)),
        sizes.timeouts[1], lambda: json.loads(result.read_text()))


def speed_step(out: Path, sizes: Sizes, configs: Sequence[str],
               amp: bool) -> Step:
    name = 'speed_amp' if amp else 'speed'
    result = out / f'{name}.json'
    command = python_command(
        'tools/analysis_tools/speed_benchmark.py', *configs, '--device',
        sizes.device, '--shape', *map(str, sizes.shape), '--batch',
        str(sizes.batch), '--repeats', str(sizes.speed_repeats), '--warmup',
        str(sizes.speed_warmup), '--out', str(result))
    skip = ''
    if amp:
        command.append('--amp')
        skip = '' if sizes.amp else '--amp needs CUDA'
    return Step(name, command, sizes.timeouts[3 if amp else 2],
                lambda: json.loads(result.read_text()), skip)


def train_config(data_root: Path, sizes: Sizes) -> str:
    """A config of the R-50 model as it is, trained on generated data for
    ``sizes.train_iters`` iterations, without validation or downloads."""
    iters = sizes.train_iters
    return f'''_base_ = {str(REPO / R50_CONFIG)!r}
model = dict(backbone=dict(init_cfg=None))  # no download
metainfo = dict(classes={SYNTHETIC_CLASSES!r})
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale={tuple(sizes.train_scale)!r}, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
train_dataloader = dict(
    batch_size={sizes.batch}, num_workers={sizes.train_workers},
    persistent_workers=False,
    dataset=dict(data_root={str(data_root) + '/'!r}, metainfo=metainfo,
                 ann_file='annotations/train.json',
                 data_prefix=dict(img='train/'), pipeline=train_pipeline))
val_dataloader = val_cfg = val_evaluator = None
test_dataloader = test_cfg = test_evaluator = None
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters={iters})
param_scheduler = [dict(type='LinearLR', start_factor=0.01, by_epoch=False,
                        begin=0, end={iters})]
default_hooks = dict(logger=dict(interval=1),
                     checkpoint=dict(by_epoch=False, interval={iters}))
log_processor = dict(by_epoch=False)
'''


def train_step(out: Path, work: Path, sizes: Sizes) -> Step:
    """Training of :func:`train_config`; its data is generated first."""
    from ..datasets.synthetic import generate
    data = generate(str(work / 'data'), num_train=sizes.train_images,
                    num_val=1, size=sizes.image_size)
    config = out / 'train_config.py'
    config.write_text(train_config(data, sizes))
    run = work / 'run'
    command = python_command('tools/train.py', str(config), '--work-dir',
                             str(run))
    if sizes.amp:
        command.append('--amp')
    return Step('train_amp', command, sizes.timeouts[4],
                lambda: training_result(run, sizes.train_iters))


def training_result(run: Path, iters: int) -> dict:
    """Losses and times of a training run, and the random state its last
    checkpoint holds (one rank; one entry per visible GPU)."""
    import torch

    from ..compat import load_local_checkpoint
    from ..engine.checkpoint import RNG_KEY, rank_states
    scalars = sorted(run.glob('*/vis_data/scalars.json'))[-1]
    rows = [json.loads(line) for line in scalars.read_text().splitlines()]
    rows = [row for row in rows if 'loss' in row]
    checkpoint = load_local_checkpoint(str(run / f'iter_{iters}.pth'),
                                       map_location='cpu')
    states = rank_states(checkpoint['meta'].get(RNG_KEY))
    seconds = [row['time'] for row in rows[1:]]  # the first one warms up
    return dict(
        iterations=[row['iter'] for row in rows],
        first_loss=rows[0]['loss'], last_loss=rows[-1]['loss'],
        finite=all(abs(row['loss']) < float('inf') for row in rows),
        seconds_per_iter=sorted(seconds)[len(seconds) // 2]
        if seconds else None,
        memory_mib=max(row.get('memory', 0) for row in rows),
        rng_ranks=len(states),
        rng_gpus=len(states[0].get('cuda', [])) if states else 0,
        visible_gpus=torch.cuda.device_count())


def build_steps(args: argparse.Namespace, sizes: Sizes,
                work: Path) -> List[Step]:
    out = Path(args.out)
    configs = list(SPEED_CONFIGS) + list(args.speed_config)
    makers = dict(
        cuda_tests=lambda: cuda_tests_step(out, sizes),
        targets=lambda: targets_step(out, sizes),
        speed=lambda: speed_step(out, sizes, configs, amp=False),
        speed_amp=lambda: speed_step(out, sizes, configs, amp=True),
        train_amp=lambda: train_step(out, work, sizes))
    return [makers[name]() for name in STEP_NAMES if name in args.steps]


def step_env() -> Dict[str, str]:
    """The environment of every step: the checkout importable (it may not be
    installed), so that configs' ``custom_imports`` find the package."""
    path = os.environ.get('PYTHONPATH', '')
    return dict(os.environ,
                PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), path])))


def run_step(step: Step, logs: Path, deadline: float) -> StepResult:
    """Run ``step`` within what is left before ``deadline``."""
    log = logs / f'{step.name}.log'
    record = dict(name=step.name, command=shlex.join(step.command),
                  log=str(log), result={})
    left = deadline - time.monotonic()
    if step.skip_reason:
        return StepResult(status='skipped', seconds=0.0,
                          reason=step.skip_reason, **record)
    if left < MIN_STEP_S:
        return StepResult(status='not run', seconds=0.0,
                          reason=f'{left:.0f} s of the budget left', **record)
    timeout = min(step.timeout_s, left)
    start = time.monotonic()
    returncode = run_with_timeout(step.command, log, timeout)
    seconds = time.monotonic() - start
    if returncode is None:
        return StepResult(status='timeout', seconds=seconds,
                          reason=f'killed after {timeout:.0f} s', **record)
    if returncode != 0:
        reason = f'exit status {returncode}: {last_line(log)}'
        return StepResult(status='failed', seconds=seconds, reason=reason,
                          **record)
    try:
        record['result'] = step.collect()
    except (OSError, ValueError, KeyError, IndexError) as err:
        reason = f'{type(err).__name__}: {err}'
        return StepResult(status='failed', seconds=seconds, reason=reason,
                          **record)
    return StepResult(status='passed', seconds=seconds, **record)


def last_line(log: Path) -> str:
    """The last non-empty line of ``log`` (where a traceback names its
    error), for the report."""
    lines = [line.strip() for line in log.read_text(errors='replace')
             .splitlines() if line.strip()]
    return lines[-1] if lines else '(no output)'


def run_with_timeout(command: List[str], log: Path,
                     timeout: float) -> Optional[int]:
    """Exit status of ``command`` (output to ``log``); None when it ran past
    ``timeout`` and was killed with its whole process group (data loader
    workers included)."""
    with open(log, 'w') as f:
        proc = subprocess.Popen(command, cwd=REPO, env=step_env(), stdout=f,
                                stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return None


def machine() -> dict:
    import torch
    info = dict(python=platform.python_version(), torch=torch.__version__,
                cuda=torch.version.cuda, cpu_count=os.cpu_count(),
                platform=platform.platform())
    if torch.cuda.is_available():
        info['gpu'] = torch.cuda.get_device_name(0)
        info['gpus'] = torch.cuda.device_count()
    return info


def git_commit() -> str:
    try:
        return subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=REPO,
                              capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return 'unknown (not a git checkout)'


def markdown(report: dict) -> str:
    """The report as markdown: a table of the steps, then one per step's
    numbers."""
    kind = 'smoke run on the CPU' if report['smoke'] else 'GPU'
    about = ', '.join(f'{k} {v}' for k, v in report['machine'].items())
    lines = [f'# GPU check ({kind})', '',
             f"commit {report['commit']}; {about}; {report['seconds']:.0f} s "
             f"of a {report['budget_s']:.0f} s budget", '',
             '| step | status | seconds | note |', '|---|---|---|---|']
    for step in report['steps']:
        lines.append(f"| {step['name']} | {step['status']} | "
                     f"{step['seconds']:.0f} | {step['reason']} |")
    by_name = {step['name']: step for step in report['steps']}
    for name, table in SECTION_TABLES:
        result = by_name.get(name, {}).get('result')
        if result:
            lines += ['', f'## {name}', ''] + table(result)
    return '\n'.join(lines) + '\n'


def tests_table(result: dict) -> List[str]:
    rows = ['| tests | failures | errors | skipped |', '|---|---|---|---|',
            '| {tests} | {failures} | {errors} | {skipped} |'.format(
                **result)]
    return rows + [f'- failed: `{name}`' for name in result['failed']]


def targets_table(result: dict) -> List[str]:
    rows = ['| caches | mmdet 3.3.0 ms | ms_rcnn_mm ms | speed-up |',
            '|---|---|---|---|']
    for regime in ('warm', 'cold'):
        r = result[regime]
        rows.append(f"| {regime} | {r['mmdet_ms']:.2f} | {r['ours_ms']:.2f}"
                    f" | {r['speedup']:.1f}x |")
    syncs = result.get('synchronisations')
    rows += ['', f"proposals on {result['device']}, host path "
             f"{result['host_path']}, max abs difference "
             f"{result['max_abs_diff']:.1e}"
             + (f"; synchronising calls: ours {syncs['ours']}, mmdet "
                f"{syncs['mmdet']}" if syncs else '')]
    return rows


def speed_table(result: dict) -> List[str]:
    from .speed import SUMMARY_HEADER, summary_rows
    columns = ('config', 'amp') + SUMMARY_HEADER
    rows = ['| ' + ' | '.join(columns) + ' |', '|---' * len(columns) + '|']
    for config in result['results']:
        for row in summary_rows(config):
            rows.append(f"| {Path(config['config']).name} | "
                        f"{'yes' if config['amp'] else 'no'} | "
                        + ' | '.join(row) + ' |')
    return rows


def train_table(result: dict) -> List[str]:
    per_iter = result['seconds_per_iter']
    return [
        '| iterations | first loss | last loss | finite | s/iter (median) '
        '| memory MiB | RNG ranks / GPUs (visible) |',
        '|---|---|---|---|---|---|---|',
        f"| {len(result['iterations'])} | {result['first_loss']:.3f} | "
        f"{result['last_loss']:.3f} | {result['finite']} | "
        f"{'' if per_iter is None else f'{per_iter:.3f}'} | "
        f"{result['memory_mib']} | {result['rng_ranks']} / "
        f"{result['rng_gpus']} ({result['visible_gpus']}) |"
    ]


SECTION_TABLES = (('cuda_tests', tests_table), ('targets', targets_table),
                  ('speed', speed_table), ('speed_amp', speed_table),
                  ('train_amp', train_table))


def write_report(out: Path, report: dict) -> Tuple[Path, Path]:
    """Write :data:`JSON_NAME` and :data:`MARKDOWN_NAME` into ``out``."""
    json_path, md_path = out / JSON_NAME, out / MARKDOWN_NAME
    json_path.write_text(json.dumps(report, indent=2) + '\n')
    md_path.write_text(markdown(report))
    return json_path, md_path


def check_device(smoke: bool) -> None:
    """Stop at once where a GPU check has no GPU."""
    import torch
    if not smoke and not torch.cuda.is_available():
        raise SystemExit(
            f'error: torch {torch.__version__} sees no CUDA device; the GPU '
            'check needs one (--smoke runs it on the CPU at toy sizes)')


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    check_device(args.smoke)
    sizes = SMOKE_SIZES if args.smoke else GPU_SIZES
    out = Path(args.out).resolve()
    (out / 'logs').mkdir(parents=True, exist_ok=True)
    args.out = str(out)
    start = time.monotonic()
    deadline = start + args.budget_s
    with tempfile.TemporaryDirectory(prefix='gpu_check_') as work:
        results = []
        for step in build_steps(args, sizes, Path(work)):
            results.append(run_step(step, out / 'logs', deadline))
            print(f'{step.name}: {results[-1].status} '
                  f'({results[-1].seconds:.0f} s) {results[-1].reason}',
                  flush=True)
    report = dict(smoke=args.smoke, commit=git_commit(), machine=machine(),
                  sizes=asdict(sizes), budget_s=args.budget_s,
                  seconds=time.monotonic() - start,
                  steps=[asdict(r) for r in results])
    for path in write_report(out, report):
        print(f'wrote {path}')
    passed = all(r.status in ('passed', 'skipped') for r in results)
    return 0 if passed else FAILED_EXIT


if __name__ == '__main__':
    sys.exit(main())
