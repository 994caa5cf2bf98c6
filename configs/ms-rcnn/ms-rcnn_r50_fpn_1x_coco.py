# Mask Scoring R-CNN, ResNet-50 FPN, 12 epochs on COCO: mmdet's Mask R-CNN
# baseline with the MaskIoU branch (arXiv 1903.00241).
_base_ = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['ms_rcnn_mm'], allow_failed_imports=False)

model = dict(
    type='ms_rcnn_mm.MaskScoringRCNN',
    roi_head=dict(
        type='ms_rcnn_mm.MaskScoringRoIHead',
        # 4 convs, 2 FCs of 1024 and a 14x14 RoI input: the paper's head
        mask_iou_head=dict(type='ms_rcnn_mm.MaskIoUHead', num_classes=80)),
    # probability at which predicted masks are binarised for MaskIoU targets
    train_cfg=dict(rcnn=dict(mask_thr_binary=0.5)))
