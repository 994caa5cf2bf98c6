# Mask Scoring R-CNN, ResNet-101 (caffe style) FPN, 24 epochs on COCO: the
# R-50 2x config with mmdet's R-101 caffe backbone (as mmdet's
# mask-rcnn_r101-caffe_fpn_1x_coco.py derives from its R-50 one).
_base_ = './ms-rcnn_r50-caffe_fpn_2x_coco.py'
model = dict(
    backbone=dict(
        depth=101,
        init_cfg=dict(
            type='Pretrained',
            checkpoint='open-mmlab://detectron2/resnet101_caffe')))
