# Mask Scoring R-CNN, ResNet-101 FPN with deformable convs in stages 3-5, 12
# epochs on COCO.
_base_ = [
    'mmdet::dcn/mask-rcnn_r101-dconv-c3-c5_fpn_1x_coco.py',
    '../_base_/ms-rcnn.py'
]
model = {{_base_.ms_rcnn}}
