# Mask R-CNN, ResNet-50 FPN in the Mask Scoring R-CNN paper's setting (Huang
# et al., CVPR 2019, Sec. 4): 18 epochs with the learning rate divided by 10
# after epochs 14 and 17, and Gaussian soft-NMS at test time. The baseline of
# ../ms-rcnn/ms-rcnn-mm_r50_fpn_18e-softnms_coco.py.
_base_ = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'
max_epochs = 18  # 12 in the 1x schedule
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(
        type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(
        type='MultiStepLR',
        begin=0,
        end=max_epochs,
        by_epoch=True,
        milestones=[14, 17],  # [8, 11] in the 1x schedule
        gamma=0.1)
]
model = dict(
    test_cfg=dict(
        rcnn=dict(
            # Gaussian soft-NMS (mmcv's soft_nms; sigma 0.5 is its default)
            # instead of NMS at IoU 0.5
            nms=dict(type='soft_nms', iou_threshold=0.5, method='gaussian',
                     sigma=0.5, min_score=0.05))))
