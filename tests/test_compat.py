"""The stack fixes of ms_rcnn_mm.compat, on a real mmengine Runner."""
import json
import os.path as osp
import pickle
import subprocess
import sys

import pytest
import torch
import torch.nn as nn
from mmengine.model import BaseModel
from mmengine.runner import Runner
from mmengine.runner.checkpoint import CheckpointLoader
from torch.utils.data import Dataset

from ms_rcnn_mm import compat
from ms_rcnn_mm.compat import CheckpointError, load_local_checkpoint


class ToyModel(BaseModel):

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(2, 1)

    def forward(self, inputs, data_samples=None, mode='tensor'):
        out = self.linear(torch.stack(inputs) if isinstance(inputs, list)
                          else inputs)
        if mode == 'loss':
            return dict(loss=((out - data_samples)**2).mean())
        return out


class ToyDataset(Dataset):

    def __len__(self):
        return 16

    def __getitem__(self, i):
        return dict(inputs=torch.tensor([i / 16, 1.0]),
                    data_samples=torch.tensor([float(i % 3)]))


def toy_runner(work_dir, max_iters, resume=False):
    torch.manual_seed(0)  # the model is built before the Runner seeds
    return Runner(
        model=ToyModel(),
        work_dir=str(work_dir),
        train_dataloader=dict(
            dataset=ToyDataset(),
            sampler=dict(type='DefaultSampler', shuffle=True),
            batch_size=4,
            num_workers=0,
            collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1, momentum=0.9)),
        # `end` fixed: by default it follows max_iters, which the interrupted
        # run shortens here
        param_scheduler=dict(type='MultiStepLR', milestones=[3], end=4,
                             by_epoch=False),
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        default_hooks=dict(
            checkpoint=dict(type='CheckpointHook', interval=2,
                            by_epoch=False)),
        randomness=dict(seed=0),
        resume=resume,
        default_scope='mmengine',
        log_level='WARNING',
        experiment_name=f'toy_{max_iters}_{resume}')


def test_checkpoint_of_mmengine_loads_with_weights_only(tmp_path):
    toy_runner(tmp_path, max_iters=2).train()
    ckpt = torch.load(tmp_path / 'iter_2.pth', weights_only=True)
    assert ckpt['meta']['iter'] == 2
    assert 'message_hub' in ckpt and 'optimizer' in ckpt


def test_checkpoint_loads_in_a_fresh_interpreter(tmp_path):
    """No HistoryBuffer exists there yet (mmengine fills its statistics
    table lazily): resuming a run in a new process must still work."""
    toy_runner(tmp_path, max_iters=2).train()
    code = ('import ms_rcnn_mm, torch, sys; '
            'c = torch.load(sys.argv[1], weights_only=True); '
            'print(c["meta"]["iter"])')
    out = subprocess.run([sys.executable, '-c', code,
                          str(tmp_path / 'iter_2.pth')],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == '2'


def test_resume_continues_exactly_where_it_stopped(tmp_path):
    straight = toy_runner(tmp_path / 'a', max_iters=4)
    straight.train()
    toy_runner(tmp_path / 'b', max_iters=2).train()
    resumed = toy_runner(tmp_path / 'b', max_iters=4, resume=True)
    resumed.train()
    assert resumed.iter == 4
    for ours, ref in zip(resumed.model.parameters(),
                         straight.model.parameters()):
        torch.testing.assert_close(ours, ref, atol=1e-6, rtol=0)
    # the resumed run did change the weights it loaded at iteration 2
    at_2 = torch.load(tmp_path / 'b' / 'iter_2.pth', weights_only=True)
    assert not torch.equal(at_2['state_dict']['linear.weight'],
                           resumed.model.linear.weight.detach())


def test_local_loader_is_registered():
    assert CheckpointLoader._schemes[''] is load_local_checkpoint


class Arbitrary:
    """Not on the allow-list."""


def test_untrusted_pickle_is_refused_and_can_be_trusted(
        tmp_path, monkeypatch):
    path = tmp_path / 'evil.pth'
    torch.save({'state_dict': {}, 'payload': Arbitrary()}, path)
    monkeypatch.delenv(compat.TRUST_ENV, raising=False)
    with pytest.raises(CheckpointError) as err:
        load_local_checkpoint(str(path))
    assert str(path) in str(err.value) and compat.TRUST_ENV in str(err.value)
    assert 'test_compat.Arbitrary' in str(err.value)  # what was refused
    monkeypatch.setenv(compat.TRUST_ENV, str(tmp_path))
    assert isinstance(load_local_checkpoint(str(path))['payload'], Arbitrary)
    monkeypatch.setenv(compat.TRUST_ENV, str(tmp_path / 'elsewhere'))
    with pytest.raises(CheckpointError):
        load_local_checkpoint(str(path))


def test_truncated_and_missing_checkpoints_name_the_file(tmp_path):
    toy_runner(tmp_path, max_iters=2).train()
    good = tmp_path / 'iter_2.pth'
    cut = tmp_path / 'cut.pth'
    cut.write_bytes(good.read_bytes()[:good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match='truncated or corrupt') as err:
        load_local_checkpoint(str(cut))
    assert str(cut) in str(err.value)
    garbage = tmp_path / 'garbage.pth'
    garbage.write_bytes(pickle.dumps([1, 2, 3])[:5])
    with pytest.raises(CheckpointError, match=osp.basename(garbage)):
        load_local_checkpoint(str(garbage))
    with pytest.raises(FileNotFoundError, match='nowhere.pth'):
        load_local_checkpoint(str(tmp_path / 'nowhere.pth'))


def test_logger_hook_dumps_test_metrics_on_the_main_process_only(
        tmp_path, monkeypatch):
    """A distributed test's metrics JSON is written by rank 0 alone."""
    from mmengine.hooks import logger_hook

    from ms_rcnn_mm import compat
    assert logger_hook.dump is compat.dump_on_main_process
    main, other = tmp_path / 'main.json', tmp_path / 'other.json'
    logger_hook.dump({'coco/bbox_mAP': 0.25}, str(main))
    monkeypatch.setattr(compat, 'is_main_process', lambda: False)
    logger_hook.dump({'coco/bbox_mAP': 0.5}, str(other))
    assert json.loads(main.read_text()) == {'coco/bbox_mAP': 0.25}
    assert not other.exists()
