# What Mask Scoring R-CNN adds to an MMDetection Mask R-CNN config. Leaf
# configs inherit it beside their Mask R-CNN baseline and merge it with
#     model = {{_base_.ms_rcnn}}
custom_imports = dict(imports=['ms_rcnn_mm'], allow_failed_imports=False)
# --resume from the newest checkpoint that loads, with torch's random state
# (ms_rcnn_mm.engine.checkpoint)
custom_hooks = [dict(type='ms_rcnn_mm.ResumeCheckHook')]

ms_rcnn = dict(
    type='ms_rcnn_mm.MaskScoringRCNN',
    roi_head=dict(
        type='ms_rcnn_mm.MaskScoringRoIHead',
        # 4 convs, 2 FCs of 1024 and a 14x14 RoI input: the paper's head
        mask_iou_head=dict(type='ms_rcnn_mm.MaskIoUHead', num_classes=80)),
    # probability at which predicted masks are binarised for MaskIoU targets
    train_cfg=dict(rcnn=dict(mask_thr_binary=0.5)))
