# Mask Scoring R-CNN, ResNet-50 (caffe style) FPN, 24 epochs on COCO.
# mmdet has no 2x caffe Mask R-CNN config: its 1x one with mmdet's 2x
# schedule (as mmdet's own ms-rcnn_r50-caffe_fpn_2x_coco.py does).
_base_ = './ms-rcnn_r50-caffe_fpn_1x_coco.py'
max_epochs = 24  # 12 in the 1x schedule
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(
        type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(
        type='MultiStepLR',
        begin=0,
        end=max_epochs,
        by_epoch=True,
        milestones=[16, 22],  # [8, 11] in the 1x schedule
        gamma=0.1)
]
