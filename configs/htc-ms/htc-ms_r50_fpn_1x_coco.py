# HTC with mask scoring, ResNet-50 FPN, 12 epochs on COCO (with COCO-stuff
# semantic maps, as mmdet's config).
_base_ = [
    'mmdet::htc/htc_r50_fpn_1x_coco.py', '../_base_/cascade-ms-rcnn.py'
]
model = {{_base_.htc_ms}}
