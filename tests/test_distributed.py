"""Distributed training and testing on CPUs, launched for real.

``tools/dist_train.sh`` / ``dist_test.sh`` (torchrun, gloo) and
``tools/slurm_train.sh`` / ``slurm_test.sh`` (srun on a SLURM cluster that
the test starts) run the demo config for a few iterations on a small
synthetic dataset. ``tests/configs/demo_probe.py`` adds
``tests/dist_probe.py``'s hook, which records per rank the image ids of each
batch, the final parameters and the rendezvous environment, and re-seeds
torch every iteration so that runs that should agree do so bit for bit.

Every process runs one thread (``OMP_NUM_THREADS=1``, torchrun's default
for several processes per node): float results then do not depend on how
the ranks are spread over processes, nodes or launchers, and the reference
2-process run below is the yardstick of every other run.
"""
import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

import pytest
import slurm_cluster
import torch
from helpers import REPO

from ms_rcnn_mm import compat, launch
from ms_rcnn_mm.datasets import generate
from ms_rcnn_mm.demo import data_options

free_port = slurm_cluster.free_port

CONFIG = REPO / 'tests' / 'configs' / 'demo_probe.py'
TOOLS = REPO / 'tools'
WORLD_SIZE = 2
NUM_TRAIN = 8  # two iterations of 2 ranks x 2 images make one epoch
NUM_VAL = 5  # odd: the test sampler pads rank 1, the results drop it
IMAGE_SIZE = 128
ITERS = 4
CHECKPOINT_INTERVAL = 2
SCHEDULE = [
    f'train_cfg.max_iters={ITERS}',
    f'train_cfg.val_begin={ITERS + 1}',  # evaluation: by dist_test.sh
    'param_scheduler.0.end=2', 'param_scheduler.1.begin=2',
    f'param_scheduler.1.end={ITERS}',
    'train_dataloader.batch_size=2', 'test_dataloader.batch_size=1',
    f'default_hooks.checkpoint.interval={CHECKPOINT_INTERVAL}',
    'default_hooks.logger.interval=1', 'randomness.seed=0'
]
#: per launch, generous: a run takes 10-30 s on 2 busy cores
TIMEOUT_S = 600
#: seconds between SIGTERM and SIGKILL when a launch is stopped
GRACE_S = 15
RENDEZVOUS_VARIABLES = ('MASTER_ADDR', 'MASTER_PORT', 'RANK', 'LOCAL_RANK',
                        'WORLD_SIZE', 'NNODES', 'NODE_RANK', 'PORT')


def launch_env(**extra: str) -> Dict[str, str]:
    """The environment of every launch: CPU only, one thread, the probe."""
    env = {k: v for k, v in os.environ.items()
           if k not in RENDEZVOUS_VARIABLES and not k.startswith('SLURM_')}
    env.update(PYTHON=sys.executable, OMP_NUM_THREADS='1',
               CUDA_VISIBLE_DEVICES='', PORT=str(free_port()),
               PYTHONPATH=os.pathsep.join(
                   [str(REPO / 'tests'), env.get('PYTHONPATH', '')]))
    env.update(extra)
    return env


def script(name: str, *args) -> List:
    """Command line of ``tools/<name>``."""
    return ['bash', TOOLS / name, *args]


def start(command: List, env: Dict[str, str], log: Path) -> subprocess.Popen:
    """Start ``command`` in its own process group, output to ``log``, in
    ``log``'s folder (mmengine's result collection writes ``.dist_test/``
    into the working directory)."""
    with open(log, 'w') as f:
        return subprocess.Popen(list(map(str, command)), cwd=log.parent,
                                env=env, stdout=f, stderr=subprocess.STDOUT,
                                start_new_session=True)


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM the launch's group (torchrun and srun stop their ranks),
    then SIGKILL it."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if proc.poll() is not None:
            return
        os.killpg(proc.pid, sig)
        try:
            proc.wait(GRACE_S)
        except subprocess.TimeoutExpired:
            pass


def finish(proc: subprocess.Popen, log: Path) -> None:
    """Wait for a launch; fail with its log unless it exits with 0."""
    try:
        rc = proc.wait(TIMEOUT_S)
    except subprocess.TimeoutExpired:
        stop(proc)
        rc = 'a timeout'
    assert rc == 0, f'{log} ended with {rc}:\n{log.read_text()[-4000:]}'


def run(command: List, env: Dict[str, str], log: Path) -> None:
    finish(start(command, env, log), log)


def options(data: Path, *extra: str) -> List[str]:
    return ['--cfg-options', *data_options(str(data)), *SCHEDULE, *extra]


def seen(work: Path, rank: int) -> dict:
    return json.loads((work / f'seen_rank{rank}.json').read_text())


def params(work: Path, rank: int) -> Dict[str, torch.Tensor]:
    return torch.load(work / f'params_rank{rank}.pth')


def scalars(work: Path) -> Dict[int, dict]:
    """Training log scalars by iteration, over every run in ``work``."""
    rows = [json.loads(line)
            for path in sorted(work.glob('*/vis_data/scalars.json'))
            for line in path.read_text().splitlines()]
    return {row['iter']: row for row in rows}


def assert_same_tensors(a: Dict[str, torch.Tensor],
                        b: Dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, f'{len(differ)} tensors differ, e.g. {differ[:3]}'


def is_parameter(name: str) -> bool:
    """Whether a state_dict key is a parameter (not a BN statistic)."""
    return not name.endswith(
        ('running_mean', 'running_var', 'num_batches_tracked'))


def evaluate(command: List, work: Path, data: Path, env: Dict[str, str],
             log: Path) -> tuple:
    """Run a test command; its metrics (without timings) and predictions."""
    out = work.with_suffix('.pkl')
    run([*command, '--work-dir', work, '--out', out, *options(data)], env,
        log)
    (metrics_log, ) = work.glob('*/*.json')  # the test run's metrics
    metrics = json.loads(metrics_log.read_text())
    for key in ('time', 'data_time'):
        metrics.pop(key)
    with open(out, 'rb') as f:
        return metrics, pickle.load(f)


def assert_same_evaluation(result: tuple, reference: tuple) -> None:
    """Same COCO and MaskIoU metrics, same predictions, in dataset order."""
    (metrics, preds), (ref_metrics, ref_preds) = result, reference
    assert {'coco/bbox_mAP', 'coco/segm_mAP', 'maskiou/segm_mAP',
            'maskiou/pearson'} <= metrics.keys()
    assert metrics == ref_metrics
    # every image once, in order, though rank 1 got a padded copy
    assert [p['img_id'] for p in preds] == list(range(1, NUM_VAL + 1))
    assert [p['img_id'] for p in ref_preds] == list(range(1, NUM_VAL + 1))
    for a, b in zip(preds, ref_preds):
        assert len(a['pred_instances']['bboxes']) > 0
        for key in ('bboxes', 'scores', 'labels', 'mask_ious',
                    'mask_scores'):
            assert torch.equal(a['pred_instances'][key],
                               b['pred_instances'][key]), key


@pytest.fixture(scope='module')
def data(tmp_path_factory) -> Path:
    return generate(tmp_path_factory.mktemp('data'), num_train=NUM_TRAIN,
                    num_val=NUM_VAL, size=IMAGE_SIZE)


@pytest.fixture(scope='module')
def ddp_run(data, tmp_path_factory) -> Path:
    """The reference run: dist_train.sh with 2 processes, 4 iterations."""
    work = tmp_path_factory.mktemp('ddp')
    run([*script('dist_train.sh', CONFIG, WORLD_SIZE), '--work-dir', work,
         *options(data)], launch_env(), work.parent / 'ddp.log')
    return work


@pytest.fixture(scope='module')
def one_process_test(ddp_run, data) -> tuple:
    """tools/test.py, one process, on the reference run's last checkpoint."""
    work = ddp_run.parent / 'single_test'
    return evaluate([sys.executable, TOOLS / 'test.py', CONFIG,
                     ddp_run / f'iter_{ITERS}.pth'], work, data,
                    launch_env(), ddp_run.parent / 'single_test.log')


@pytest.fixture(scope='module')
def slurm():
    """A SLURM cluster on this machine, torn down by PID after the tests."""
    reason = slurm_cluster.missing_requirement()
    if reason:
        pytest.skip(reason)
    slurm_cluster.install()
    with slurm_cluster.SlurmCluster() as cluster:
        yield cluster


# ---- the launcher glue, without processes ---------------------------------

def test_launcher_env_maps_slurm_and_mpi_variables():
    slurm = dict(SLURM_PROCID='3', SLURM_LOCALID='1', SLURM_NTASKS='4',
                 SLURM_NODELIST='node[07-08]')
    hosts = []
    env = compat.launcher_env('slurm', slurm,
                              lambda nodes: hosts.append(nodes) or 'node07')
    assert env == dict(RANK='3', LOCAL_RANK='1', WORLD_SIZE='4',
                       MASTER_ADDR='node07', MASTER_PORT='29500')
    assert hosts == ['node[07-08]']
    # MASTER_ADDR and MASTER_PORT set by the user win, as in mmengine
    env = compat.launcher_env(
        'slurm', dict(slurm, MASTER_ADDR='10.0.0.1', MASTER_PORT='1234'),
        lambda nodes: pytest.fail('scontrol called'))
    assert (env['MASTER_ADDR'], env['MASTER_PORT']) == ('10.0.0.1', '1234')
    mpi = dict(OMPI_COMM_WORLD_RANK='5', OMPI_COMM_WORLD_LOCAL_RANK='1',
               OMPI_COMM_WORLD_SIZE='8', MASTER_ADDR='head')
    assert compat.launcher_env('mpi', mpi) == dict(
        RANK='5', LOCAL_RANK='1', WORLD_SIZE='8', MASTER_ADDR='head',
        MASTER_PORT='29500')


def test_launcher_env_names_missing_variables():
    with pytest.raises(KeyError, match='SLURM_LOCALID, SLURM_NTASKS'):
        compat.launcher_env('slurm', dict(SLURM_PROCID='0',
                                          SLURM_NODELIST='n1'))
    with pytest.raises(KeyError, match='--launcher mpi .*MASTER_ADDR'):
        compat.launcher_env('mpi', dict(
            OMPI_COMM_WORLD_RANK='0', OMPI_COMM_WORLD_LOCAL_RANK='0',
            OMPI_COMM_WORLD_SIZE='1'))
    with pytest.raises(ValueError, match="'pdsh' is not one of"):
        compat.launcher_env('pdsh', {})


def test_cpu_model_wrapper_cfg_keeps_mmengine_defaults():
    assert compat.cpu_model_wrapper_cfg(None, True) == dict(
        type='MMDistributedDataParallel', device_ids=None,
        broadcast_buffers=False, find_unused_parameters=True)
    assert compat.cpu_model_wrapper_cfg(
        dict(type='MMDistributedDataParallel', broadcast_buffers=True)) == \
        dict(type='MMDistributedDataParallel', broadcast_buffers=True,
             device_ids=None)
    # not a DDP subclass: Runner.wrap_model gives it no device ids either
    fsdp = dict(type='MMFullyShardedDataParallel')
    assert compat.cpu_model_wrapper_cfg(fsdp) == fsdp


def test_cpu_path_only_for_distributed_runs_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    assert launch.cpu_launcher(['c.py', '--launcher', 'slurm']) == 'slurm'
    assert launch.cpu_launcher(['c.py', '--launcher=pytorch']) == 'pytorch'
    assert launch.cpu_launcher(['c.py']) is None
    assert launch.cpu_launcher(['c.py', '--launcher', 'none']) is None
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    assert launch.cpu_launcher(['c.py', '--launcher', 'pytorch']) is None


def test_init_cpu_dist_gives_gloo_for_nccl(monkeypatch):
    for key, value in dict(RANK='0', LOCAL_RANK='0', WORLD_SIZE='1',
                           MASTER_ADDR='127.0.0.1',
                           MASTER_PORT=str(free_port())).items():
        monkeypatch.setenv(key, value)
    compat.init_cpu_dist('pytorch', backend='nccl', timeout=60)
    try:
        assert torch.distributed.get_backend() == 'gloo'
        assert torch.distributed.get_world_size() == 1
        total = torch.tensor([2.5])
        torch.distributed.all_reduce(total)
        assert total.item() == 2.5
    finally:
        compat.destroy_cpu_dist()
    assert not torch.distributed.is_initialized()


# ---- torchrun: dist_train.sh and dist_test.sh -----------------------------

def test_dist_train_gives_each_rank_half_of_each_epoch(ddp_run):
    ranks = [seen(ddp_run, rank) for rank in range(WORLD_SIZE)]
    for rank, record in enumerate(ranks):
        assert record['backend'] == 'gloo'
        assert record['env']['RANK'] == str(rank)
        assert record['env']['WORLD_SIZE'] == str(WORLD_SIZE)
        assert sorted(map(int, record['batches'])) == list(
            range(1, ITERS + 1))
    iters_per_epoch = NUM_TRAIN // (WORLD_SIZE * 2)
    for first in range(1, ITERS + 1, iters_per_epoch):
        epoch = range(first, first + iters_per_epoch)
        halves = [[i for it in epoch for i in r['batches'][str(it)]]
                  for r in ranks]
        assert [len(h) for h in halves] == [NUM_TRAIN // 2] * 2
        assert not set(halves[0]) & set(halves[1])
        assert set(halves[0]) | set(halves[1]) == set(
            range(1, NUM_TRAIN + 1))


def test_dist_train_keeps_parameters_identical_on_ranks(ddp_run):
    rank0, rank1 = params(ddp_run, 0), params(ddp_run, 1)
    names = [k for k in rank0 if is_parameter(k)]
    assert_same_tensors({k: rank0[k] for k in names},
                        {k: rank1[k] for k in names})
    # the batch-norm statistics are not synchronised (mmengine's
    # broadcast_buffers=False): they differ, as each rank saw its own half
    stats = [k for k in rank0 if k.endswith('running_mean')]
    assert stats and all(not torch.equal(rank0[k], rank1[k]) for k in stats)
    # training moved the parameters between the two checkpoints
    first = compat.load_local_checkpoint(str(ddp_run / 'iter_2.pth'))
    moved = [k for k in names
             if not torch.equal(first['state_dict'][k], rank0[k])]
    assert len(moved) > len(names) // 2
    last = compat.load_local_checkpoint(str(ddp_run / 'iter_4.pth'))
    assert_same_tensors(last['state_dict'], rank0)


def test_dist_train_rank0_alone_writes_checkpoints_and_logs(ddp_run):
    assert sorted(p.name for p in ddp_run.glob('*.pth')) == [
        'iter_2.pth', 'iter_4.pth', 'params_rank0.pth', 'params_rank1.pth']
    assert (ddp_run / 'last_checkpoint').read_text().strip().endswith(
        'iter_4.pth')
    logs = list(ddp_run.glob('*/*.log'))
    assert len(logs) == 1 and not list(ddp_run.rglob('*rank1*.log'))
    text = logs[0].read_text()
    assert 'Distributed launcher: pytorch' in text
    assert text.count(f'Iter(train) [{ITERS}/{ITERS}]') == 1
    assert sorted(scalars(ddp_run)) == list(range(1, ITERS + 1))


def test_dist_test_matches_one_process_test(ddp_run, data,
                                            one_process_test, tmp_path):
    result = evaluate(
        script('dist_test.sh', CONFIG, ddp_run / f'iter_{ITERS}.pth',
               WORLD_SIZE), tmp_path / 'dist', data, launch_env(),
        tmp_path / 'dist.log')
    assert_same_evaluation(result, one_process_test)


def test_resume_under_ddp_continues_the_run(ddp_run, data, tmp_path):
    work = tmp_path / 'resumed'
    train = [*script('dist_train.sh', CONFIG, WORLD_SIZE), '--work-dir', work]
    log = tmp_path / 'held.log'
    proc = start([*train, *options(
        data, f'default_hooks.probe.hold_after_iter={CHECKPOINT_INTERVAL}')],
        launch_env(), log)
    held = [work / f'held_rank{rank}' for rank in range(WORLD_SIZE)]
    pids = []
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while not all(p.is_file() and p.read_text() for p in held):
            assert proc.poll() is None, log.read_text()[-4000:]
            assert time.monotonic() < deadline, 'no rank reached iter 2'
            time.sleep(0.2)
        pids = [int(p.read_text()) for p in held]
        stop(proc)  # killed after its first checkpoint
    finally:
        stop(proc)
        for pid in pids:  # ranks that outlived torchrun
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    assert sorted(p.name for p in work.glob('iter_*.pth')) == ['iter_2.pth']
    run([*train, '--resume', *options(data)], launch_env(),
        tmp_path / 'resume.log')

    for rank in range(WORLD_SIZE):
        record, reference = seen(work, rank), seen(ddp_run, rank)
        assert record['start_iter'] == CHECKPOINT_INTERVAL
        # the data continue where the checkpoint left them
        assert record['batches'] == {
            it: ids for it, ids in reference['batches'].items()
            if int(it) > CHECKPOINT_INTERVAL}
    # iterations 1-2 (killed run) and 3-4 (resumed) make the reference
    # curve: same iterations, losses and learning rates
    curve, reference = scalars(work), scalars(ddp_run)
    assert sorted(curve) == list(range(1, ITERS + 1))
    for it in curve:
        for key in ('loss', 'loss_mask_iou', 'lr', 'grad_norm'):
            assert curve[it][key] == reference[it][key], (it, key)
    assert_same_tensors(params(work, 0), params(ddp_run, 0))


# ---- two nodes on loopback ------------------------------------------------

def test_two_nodes_on_loopback_finish_the_same_run(ddp_run, data, tmp_path):
    port = str(free_port())
    procs = []
    for node in range(2):
        work = tmp_path / f'node{node}'
        env = launch_env(NNODES='2', NODE_RANK=str(node), PORT=port,
                         MASTER_ADDR='127.0.0.1')
        log = tmp_path / f'node{node}.log'
        procs.append((start([*script('dist_train.sh', CONFIG, 1),
                             '--work-dir', work, *options(data)], env, log),
                      log))
    try:
        for proc, log in procs:
            finish(proc, log)
    finally:
        for proc, _ in procs:
            stop(proc)
    node0, node1 = tmp_path / 'node0', tmp_path / 'node1'
    for rank, work in enumerate((node0, node1)):
        record = seen(work, rank)
        assert record['env']['RANK'] == str(rank)
        assert record['env']['WORLD_SIZE'] == '2'
        assert record['env']['LOCAL_RANK'] == '0'
        assert record['batches'] == seen(ddp_run, rank)['batches']
        # same ranks, same data, same numbers as on one node
        assert_same_tensors(params(work, rank), params(ddp_run, rank))
    assert (node0 / f'iter_{ITERS}.pth').is_file()
    assert len(list(node0.glob('*/*.log'))) == 1
    # node 1 (rank 1) wrote no checkpoint, log or config: only the probe
    files = sorted(p.name for p in node1.rglob('*') if p.is_file())
    assert files == ['params_rank1.pth', 'seen_rank1.json']


# ---- SLURM ----------------------------------------------------------------

def test_slurm_train_and_test_on_a_real_cluster(slurm, ddp_run, data,
                                                one_process_test, tmp_path):
    env = launch_env(SLURM_CONF=slurm.env['SLURM_CONF'], GPUS='2',
                     GPUS_PER_NODE='0', CPUS_PER_TASK='1',
                     MASTER_PORT=str(free_port()))
    work = tmp_path / 'slurm'
    run([*script('slurm_train.sh', slurm_cluster.PARTITION, 'ms-rcnn-train',
                 CONFIG, work), *options(data)], env, tmp_path / 'train.log')
    for rank in range(WORLD_SIZE):
        record = seen(work, rank)
        assert record['backend'] == 'gloo'
        # srun's variables, and rank 0's host from scontrol
        assert record['env'] == dict(
            RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE='2',
            MASTER_ADDR=slurm.host, MASTER_PORT=env['MASTER_PORT'])
        assert record['batches'] == seen(ddp_run, rank)['batches']
        assert_same_tensors(params(work, rank), params(ddp_run, rank))
    (log, ) = work.glob('*/*.log')
    assert 'Distributed launcher: slurm' in log.read_text()
    result = evaluate(
        script('slurm_test.sh', slurm_cluster.PARTITION, 'ms-rcnn-test',
               CONFIG, work / f'iter_{ITERS}.pth'), tmp_path / 'test', data,
        env, tmp_path / 'test.log')
    assert_same_evaluation(result, one_process_test)
