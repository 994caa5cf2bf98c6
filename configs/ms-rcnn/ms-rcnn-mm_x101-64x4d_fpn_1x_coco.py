# Mask Scoring R-CNN, ResNeXt-101 64x4d FPN, 12 epochs on COCO.
_base_ = [
    'mmdet::mask_rcnn/mask-rcnn_x101-64x4d_fpn_1x_coco.py',
    '../_base_/ms-rcnn.py'
]
model = {{_base_.ms_rcnn}}
