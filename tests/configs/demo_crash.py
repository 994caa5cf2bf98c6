# The demo config with tests/crash_probe.py's KillHook, no random
# augmentation and the 128x128 images of tests/test_resume.py (which puts
# tests/ on PYTHONPATH).
_base_ = '../../configs/demo/ms-rcnn_r18-w32_fpn_synthetic.py'

custom_imports = dict(imports=['ms_rcnn_mm', 'crash_probe'])
default_hooks = dict(kill=dict(type='KillHook'))
train_pipeline = [
    dict(type='ms_rcnn_mm.CheckedLoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=(128, 128), keep_ratio=True),
    dict(type='PackDetInputs')  # no RandomFlip
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
