# The demo config with tests/dist_probe.py's DistProbeHook, for
# tests/test_distributed.py (which puts tests/ on PYTHONPATH).
_base_ = '../../configs/demo/ms-rcnn_r18-w32_fpn_synthetic.py'

custom_imports = dict(imports=['ms_rcnn_mm', 'dist_probe'])
default_hooks = dict(probe=dict(type='DistProbeHook'))
