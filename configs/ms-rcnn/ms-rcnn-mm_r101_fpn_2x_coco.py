# Mask Scoring R-CNN, ResNet-101 FPN, 24 epochs on COCO.
_base_ = [
    'mmdet::mask_rcnn/mask-rcnn_r101_fpn_2x_coco.py', '../_base_/ms-rcnn.py'
]
model = {{_base_.ms_rcnn}}
