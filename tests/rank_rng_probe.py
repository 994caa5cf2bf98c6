"""One rank of tests/test_checkpoints.py's two-rank resume (run by torchrun
with gloo): ResumeCheckHook gathers and saves each rank's random state, a
fresh hook restores it, and the rank records what it draws next both ways.

Writes ``<folder>/draws_rank{r}.json`` with ``uninterrupted`` (the draws
right after the checkpoint) and ``resumed`` (those after the resume).
"""
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import distributed

from ms_rcnn_mm.compat import load_local_checkpoint
from ms_rcnn_mm.engine.checkpoint import ResumeCheckHook

#: each rank's seed is this plus its rank, so the ranks' states differ
SEED = 100
DRAWS = 4


def main(folder: Path) -> None:
    distributed.init_process_group('gloo')
    rank = distributed.get_rank()
    path = folder / 'iter_1.pth'
    torch.manual_seed(SEED + rank)
    torch.rand(3 + rank)  # the ranks' iterations draw different amounts
    hook = ResumeCheckHook()
    hook.after_train_iter(SimpleNamespace(), 0)  # end of the iteration
    uninterrupted = torch.rand(DRAWS).tolist()
    if rank == 0:
        checkpoint = {'meta': {}}
        hook.before_save_checkpoint(SimpleNamespace(), checkpoint)
        torch.save(checkpoint, path)
    distributed.barrier()
    torch.manual_seed(0)  # a new process: every rank seeded alike
    resumed_hook = ResumeCheckHook()
    resumed_hook.after_load_checkpoint(SimpleNamespace(_resume=True),
                                       load_local_checkpoint(str(path)))
    resumed_hook.before_train_iter(SimpleNamespace(), 0)
    resumed = torch.rand(DRAWS).tolist()
    (folder / f'draws_rank{rank}.json').write_text(
        json.dumps(dict(uninterrupted=uninterrupted, resumed=resumed)))
    distributed.destroy_process_group()


if __name__ == '__main__':
    main(Path(sys.argv[1]))
