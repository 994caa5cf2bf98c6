# Mask Scoring R-CNN, ResNet-50 FPN in the paper's setting (Huang et al.,
# CVPR 2019, Sec. 4): 18 epochs, learning-rate steps after epochs 14 and 17,
# Gaussian soft-NMS at test time (the values are in the baseline config).
_base_ = [
    '../baselines/mask-rcnn_r50_fpn_18e-softnms_coco.py',
    '../_base_/ms-rcnn.py'
]
model = {{_base_.ms_rcnn}}
