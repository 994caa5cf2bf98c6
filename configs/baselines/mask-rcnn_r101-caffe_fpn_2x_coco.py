# Mask R-CNN, ResNet-101 (caffe style) FPN, 24 epochs on COCO: the baseline
# of ms-rcnn-mm_r101-caffe_fpn_2x_coco.py. The R-50 2x one with the backbone
# of mmdet's mask_rcnn/mask-rcnn_r101-caffe_fpn_1x_coco.py.
_base_ = './mask-rcnn_r50-caffe_fpn_2x_coco.py'
model = dict(
    backbone=dict(
        depth=101,
        init_cfg=dict(
            type='Pretrained',
            checkpoint='open-mmlab://detectron2/resnet101_caffe')))
