# Cascade Mask R-CNN with mask scoring, ResNet-101 FPN, 12 epochs on COCO.
_base_ = [
    'mmdet::cascade_rcnn/cascade-mask-rcnn_r101_fpn_1x_coco.py',
    '../_base_/cascade-ms-rcnn.py'
]
model = {{_base_.cascade_ms_rcnn}}
