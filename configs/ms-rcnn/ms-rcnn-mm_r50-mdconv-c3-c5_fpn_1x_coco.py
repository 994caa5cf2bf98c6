# Mask Scoring R-CNN, ResNet-50 FPN with modulated deformable convs in stages
# 3-5, 12 epochs on COCO.
_base_ = [
    'mmdet::dcnv2/mask-rcnn_r50-mdconv-c3-c5_fpn_1x_coco.py',
    '../_base_/ms-rcnn.py'
]
model = {{_base_.ms_rcnn}}
