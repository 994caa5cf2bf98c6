# HTC without its semantic branch, with mask scoring, ResNet-50 FPN,
# 12 epochs on COCO.
_base_ = [
    'mmdet::htc/htc-without-semantic_r50_fpn_1x_coco.py',
    '../_base_/cascade-ms-rcnn.py'
]
model = {{_base_.htc_ms}}
