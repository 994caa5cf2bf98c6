# A small MS R-CNN trained from scratch on the synthetic shapes of
# `make demo` (ms_rcnn_mm.datasets.synthetic), on a CPU in minutes.
_base_ = '../ms-rcnn/ms-rcnn-mm_r50_fpn_1x_coco.py'

data_root = 'data/synthetic/'  # written by ms_rcnn_mm.datasets.synthetic
classes = ('circle', 'triangle', 'square', 'star')
num_classes = len(classes)
width = 64  # FPN and head channels (256 in the R50 config)
stage_channels = [32, 64, 128, 256]  # ResNet-18 at half width (base 32)
max_iters = 340  # batches of 8: about 9 epochs of the 300 training images

model = dict(
    backbone=dict(
        depth=18, base_channels=32, frozen_stages=-1, norm_eval=False,
        init_cfg=None),  # trained from scratch: no download
    neck=dict(in_channels=stage_channels, out_channels=width),
    rpn_head=dict(in_channels=width, feat_channels=width),
    roi_head=dict(
        # 2x2 samples per bin (0 = adaptive, many on large RoIs: CPU-costly)
        bbox_roi_extractor=dict(
            out_channels=width, roi_layer=dict(sampling_ratio=2)),
        bbox_head=dict(
            in_channels=width, fc_out_channels=256, num_classes=num_classes),
        mask_roi_extractor=dict(
            out_channels=width, roi_layer=dict(sampling_ratio=2)),
        mask_head=dict(
            # mmdet's FCNMaskHead with its convolutions channels-last on the
            # CPU: the same weights, faster there (docs/benchmarks.md)
            type='ms_rcnn_mm.ChannelsLastFCNMaskHead',
            in_channels=width, conv_out_channels=width,
            num_classes=num_classes),
        mask_iou_head=dict(
            in_channels=width, conv_out_channels=width, fc_out_channels=256,
            num_classes=num_classes)),
    train_cfg=dict(
        # 256x256 images have ~16k anchors: 1000 before NMS, 300 after
        # (2000 and 1000 in the R50 config)
        rpn_proposal=dict(nms_pre=1000, max_per_img=300),
        # 128 sampled RoIs per image (512 in the R50 config), up to a
        # quarter of them positive (the mask and MaskIoU heads train on
        # those); measured on 2 quiet cores: 1.5 s per iteration early on,
        # 1.2 s with 64 RoIs, which left the MaskIoU head undertrained
        rcnn=dict(sampler=dict(num=128))),
    test_cfg=dict(rpn=dict(nms_pre=1000, max_per_img=300)))

image_scale = (256, 256)  # the generated images' size
# data that fails loudly where it is broken (ms_rcnn_mm.datasets.checked):
# the dataset loads images with ms_rcnn_mm.CheckedLoadImageFromFile
dataset_type = 'ms_rcnn_mm.CheckedCocoDataset'
load_image = dict(type='LoadImageFromFile')
train_pipeline = [
    load_image,
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=image_scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
test_pipeline = [
    load_image,
    dict(type='Resize', scale=image_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(
        type='PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                   'scale_factor'))
]
metainfo = dict(classes=classes)
# no loader workers: on a 2-core machine they slow the 2 training threads
# down more than loading 8 small images costs (measured: 1.9 vs 2.0 s/iter)
train_dataloader = dict(
    batch_size=8,
    num_workers=0,
    persistent_workers=False,
    batch_sampler=None,
    dataset=dict(
        type=dataset_type, data_root=data_root, metainfo=metainfo,
        ann_file='annotations/train.json', data_prefix=dict(img='train/'),
        filter_cfg=dict(filter_empty_gt=True, min_size=0),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=4,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        type=dataset_type, data_root=data_root, metainfo=metainfo,
        ann_file='annotations/val.json', data_prefix=dict(img='val/'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = [
    dict(type='CocoMetric', ann_file=data_root + 'annotations/val.json',
         metric=['bbox', 'segm']),
    # segm AP with and without mask scoring, MaskIoU correlations; Boundary
    # AP of the same rankings (the [boundary] extra, which make demo installs)
    dict(type='ms_rcnn_mm.MaskIoUQualityMetric',
         ann_file=data_root + 'annotations/val.json', boundary=True)
]
test_evaluator = val_evaluator

train_cfg = dict(
    _delete_=True, type='IterBasedTrainLoop', max_iters=max_iters,
    val_interval=max_iters)
# AdamW trains from scratch faster than the R50 config's SGD
optim_wrapper = dict(
    _delete_=True,
    optimizer=dict(type='AdamW', lr=2e-3, weight_decay=0.05),
    clip_grad=dict(max_norm=10.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0,
         end=50),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=50, end=max_iters,
         eta_min=1e-5)
]
default_hooks = dict(
    logger=dict(interval=10),
    checkpoint=dict(by_epoch=False, interval=150, max_keep_ckpts=2))
log_processor = dict(by_epoch=False)
auto_scale_lr = dict(enable=False, base_batch_size=8)
