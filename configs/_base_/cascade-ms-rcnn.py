# What mask scoring adds to an MMDetection Cascade Mask R-CNN or HTC config.
# Leaf configs inherit it beside their baseline and merge the dict of their
# kind:  model = {{_base_.cascade_ms_rcnn}}  or  model = {{_base_.htc_ms}}
_base_ = './ms-rcnn.py'
# the standard head's MaskIoU head, with mmdet's zero output bias: the
# cascade was measured with it (docs/cascade.md)
_mask_iou_head = dict(
    type='ms_rcnn_mm.MaskIoUHead', num_classes=80, iou_prior=0.0)
# the MaskIoU head trains on every stage's positives and reads the
# stage-averaged masks at inference (docs/cascade.md)
cascade_ms_rcnn = dict(
    type='ms_rcnn_mm.MaskScoringRCNN',
    roi_head=dict(
        type='ms_rcnn_mm.CascadeMaskScoringRoIHead',
        mask_iou_head=_mask_iou_head))
htc_ms = dict(
    type='ms_rcnn_mm.MaskScoringRCNN',
    roi_head=dict(
        type='ms_rcnn_mm.HTCMaskScoringRoIHead',
        mask_iou_head=_mask_iou_head))
