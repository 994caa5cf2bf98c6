# Mask R-CNN, ResNet-50 (caffe style) FPN, 24 epochs on COCO: the baseline
# of ms-rcnn-mm_r50-caffe_fpn_2x_coco.py. mmdet has no 2x caffe Mask R-CNN
# config; this is its 1x one with mmdet's 2x schedule
# (mmdet::_base_/schedules/schedule_2x.py), as mmdet's own
# ms_rcnn/ms-rcnn_r50-caffe_fpn_2x_coco.py does for MS R-CNN.
_base_ = 'mmdet::mask_rcnn/mask-rcnn_r50-caffe_fpn_1x_coco.py'
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
