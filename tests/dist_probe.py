"""A hook that records what each rank of a distributed run did.

Loaded into the training processes of tests/test_distributed.py with
``custom_imports`` (``tests/`` on ``PYTHONPATH``) and enabled as an extra
default hook: ``--cfg-options default_hooks.probe.type=DistProbeHook``.
Writes into the work dir, per rank ``r``:

- ``seen_rank{r}.json``: the image ids of every training batch, by
  iteration, the iteration the run started from (after a resume), the
  process group's backend and the rendezvous environment variables;
- ``params_rank{r}.pth``: the model's ``state_dict`` after training.

Every iteration re-seeds torch's generator with ``seed + iteration``, so the
random choices of an iteration (RoI sampling) depend on the iteration alone,
not on what ran before it in the same process: a resumed run then repeats
the uninterrupted one exactly. With ``hold_after_iter=k`` the ranks block
after iteration ``k`` (after its checkpoint) and touch ``held_rank{r}``, so
that a test can kill the run there.
"""
import json
import os
import os.path as osp
import time
from typing import Optional

import torch
from mmengine.dist import get_rank, is_distributed
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS

#: seconds between checks while a rank is held (it waits to be killed)
HOLD_POLL_S = 0.5
#: rendezvous variables recorded per rank
ENV_KEYS = ('RANK', 'LOCAL_RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT')


@HOOKS.register_module()
class DistProbeHook(Hook):
    """Record image ids and final parameters per rank.

    Args:
        hold_after_iter (int, optional): Block after this iteration.
            Defaults to None.
    """
    priority = 'LOWEST'  # after CheckpointHook (VERY_LOW)

    def __init__(self, hold_after_iter: Optional[int] = None) -> None:
        self.hold_after_iter = hold_after_iter
        self.seen = dict(start_iter=None, batches={})

    def _path(self, runner, name: str) -> str:
        return osp.join(runner.work_dir, f'{name}_rank{get_rank()}')

    def before_train(self, runner) -> None:
        self.seen.update(
            start_iter=runner.iter,
            backend=torch.distributed.get_backend()
            if is_distributed() else None,
            env={key: os.environ.get(key) for key in ENV_KEYS})

    def before_train_iter(self, runner, batch_idx: int,
                          data_batch: Optional[dict] = None) -> None:
        torch.manual_seed(runner.seed + runner.iter)
        ids = [s.img_id for s in data_batch['data_samples']]
        self.seen['batches'][runner.iter + 1] = ids

    def after_train_iter(self, runner, batch_idx: int,
                         data_batch: Optional[dict] = None,
                         outputs: Optional[dict] = None) -> None:
        if runner.iter + 1 != self.hold_after_iter:
            return
        self._dump_seen(runner)
        with open(self._path(runner, 'held'), 'w') as f:
            f.write(str(os.getpid()))
        while True:
            time.sleep(HOLD_POLL_S)

    def after_train(self, runner) -> None:
        self._dump_seen(runner)
        model = runner.model.module if is_model_wrapper(
            runner.model) else runner.model
        torch.save(model.state_dict(), self._path(runner, 'params') + '.pth')

    def _dump_seen(self, runner) -> None:
        with open(self._path(runner, 'seen') + '.json', 'w') as f:
            json.dump(self.seen, f)
