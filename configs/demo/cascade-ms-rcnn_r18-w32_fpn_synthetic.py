# The demo model (ms-rcnn_r18-w32_fpn_synthetic.py: backbone, data, schedule)
# with Cascade Mask R-CNN's three-stage RoI head and mask scoring.
_base_ = './ms-rcnn_r18-w32_fpn_synthetic.py'

width = {{_base_.width}}
num_classes = {{_base_.num_classes}}
# box regression targets per stage: mmdet's cascade-mask-rcnn_r50_fpn
stage_stds = [[0.1, 0.1, 0.2, 0.2], [0.05, 0.05, 0.1, 0.1],
              [0.033, 0.033, 0.067, 0.067]]
stage_ious = [0.5, 0.6, 0.7]  # positive IoU of each stage, as mmdet's
roi_extractor = dict(
    type='SingleRoIExtractor', out_channels=width, featmap_strides=[4, 8, 16,
                                                                    32],
    # 2x2 samples per bin, as the demo's standard head
    roi_layer=dict(type='RoIAlign', sampling_ratio=2))
model = dict(
    type='ms_rcnn_mm.MaskScoringRCNN',
    roi_head=dict(
        _delete_=True,
        type='ms_rcnn_mm.CascadeMaskScoringRoIHead',
        num_stages=3,
        stage_loss_weights=[1, 0.5, 0.25],
        bbox_roi_extractor=dict(
            roi_extractor, roi_layer=dict(roi_extractor['roi_layer'],
                                          output_size=7)),
        bbox_head=[
            dict(type='Shared2FCBBoxHead', in_channels=width,
                 fc_out_channels=256,  # 1024 in the R50 config
                 roi_feat_size=7, num_classes=num_classes,
                 bbox_coder=dict(type='DeltaXYWHBBoxCoder',
                                 target_means=[0., 0., 0., 0.],
                                 target_stds=stds),
                 reg_class_agnostic=True,
                 loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=False,
                               loss_weight=1.0),
                 loss_bbox=dict(type='SmoothL1Loss', beta=1.0,
                                loss_weight=1.0))
            for stds in stage_stds
        ],
        mask_roi_extractor=dict(
            roi_extractor, roi_layer=dict(roi_extractor['roi_layer'],
                                          output_size=14)),
        mask_head=dict(
            type='FCNMaskHead', num_convs=4, in_channels=width,
            conv_out_channels=width, num_classes=num_classes,
            loss_mask=dict(type='CrossEntropyLoss', use_mask=True,
                           loss_weight=1.0)),
        mask_iou_head=dict(
            type='ms_rcnn_mm.MaskIoUHead', in_channels=width,
            conv_out_channels=width, fc_out_channels=256,
            num_classes=num_classes,
            iou_prior=0.0)),  # mmdet's output bias, as measured
    train_cfg=dict(rcnn=[
        dict(assigner=dict(type='MaxIoUAssigner', pos_iou_thr=iou,
                           neg_iou_thr=iou, min_pos_iou=iou,
                           match_low_quality=False, ignore_iof_thr=-1),
             # 128 sampled RoIs per image, as the demo's standard head
             sampler=dict(type='RandomSampler', num=128, pos_fraction=0.25,
                          neg_pos_ub=-1, add_gt_as_proposals=True),
             mask_size=28, pos_weight=-1, debug=False)
        for iou in stage_ious
    ]))
