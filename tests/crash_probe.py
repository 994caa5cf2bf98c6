"""A hook that kills its own training process, for tests/test_resume.py.

Loaded with ``custom_imports`` (``tests/`` on ``PYTHONPATH``) by
``tests/configs/demo_crash.py``. With ``KILL_BEFORE_ITER=k`` in the
environment, the process sends itself SIGKILL before iteration ``k + 1``
(after ``k`` iterations and their checkpoints): no handler, no cleanup, as
when a cluster's scheduler kills a job.
"""
import os
import signal

from mmengine.hooks import Hook
from mmengine.registry import HOOKS

KILL_ENV = 'KILL_BEFORE_ITER'


@HOOKS.register_module()
class KillHook(Hook):
    """SIGKILL the process at the iteration ``KILL_BEFORE_ITER`` names."""

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        at = os.environ.get(KILL_ENV)
        if at is not None and runner.iter == int(at):
            os.kill(os.getpid(), signal.SIGKILL)
