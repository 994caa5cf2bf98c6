# Mask Scoring R-CNN, ResNet-101 (caffe style) FPN, 12 epochs on COCO.
_base_ = [
    'mmdet::mask_rcnn/mask-rcnn_r101-caffe_fpn_1x_coco.py',
    '../_base_/ms-rcnn.py'
]
model = {{_base_.ms_rcnn}}
