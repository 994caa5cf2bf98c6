# Mask Scoring R-CNN, ResNet-50 (caffe style) FPN, 24 epochs on COCO: its
# baseline (mmdet's 1x caffe Mask R-CNN with the 2x schedule) plus the
# MaskIoU head.
_base_ = [
    '../baselines/mask-rcnn_r50-caffe_fpn_2x_coco.py', '../_base_/ms-rcnn.py'
]
model = {{_base_.ms_rcnn}}
