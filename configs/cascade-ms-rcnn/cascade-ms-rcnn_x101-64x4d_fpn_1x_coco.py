# Cascade Mask R-CNN with mask scoring, ResNeXt-101 64x4d FPN, 12 epochs on
# COCO.
_base_ = [
    'mmdet::cascade_rcnn/cascade-mask-rcnn_x101-64x4d_fpn_1x_coco.py',
    '../_base_/cascade-ms-rcnn.py'
]
model = {{_base_.cascade_ms_rcnn}}
