# The demo's small MS R-CNN on real photographs: fruits_nuts (18 images of
# 800x600, dates, figs and hazelnuts, COCO polygons, 14 train / 4 val). A
# copy is in this repository, tests/data/fruits_nuts (MIT licence): the default
# data root when run from the repository's root. Another root comes from the
# environment, e.g.
#     MS_RCNN_FRUITS_NUTS=/data/fruits_nuts python tools/train.py THIS
# or from --cfg-options (the dataloaders' data_root and the evaluators'
# ann_file), as `python -m ms_rcnn_mm.demo --no-generate --data-root` does.
_base_ = './ms-rcnn_r18-w32_fpn_synthetic.py'

data_root = '{{$MS_RCNN_FRUITS_NUTS:tests/data/fruits_nuts}}/'
classes = ('date', 'fig', 'hazelnut')
num_classes = len(classes)
max_iters = 120  # batches of 4: about 34 epochs of the 14 training images
warmup_iters = 20  # 50 in the synthetic config

model = dict(
    roi_head=dict(
        bbox_head=dict(num_classes=num_classes),
        mask_head=dict(num_classes=num_classes),
        mask_iou_head=dict(num_classes=num_classes)))

image_scale = (512, 384)  # 800x600 photographs at 0.64 (CPU budget)
# 14 training photographs: scale jitter (0.56-0.72 of 800x600) and flips
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomResize', scale=[(448, 336), (576, 432)],
         keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=image_scale, keep_ratio=True),
    dict(type='PackDetInputs')
]
metainfo = dict(classes=classes)
# both splits' images are in images/
dataset_common = dict(
    data_root=data_root, metainfo=metainfo, data_prefix=dict(img='images/'))
train_dataloader = dict(
    batch_size=4,  # 8 in the synthetic config: images are 3x larger here
    dataset=dict(**dataset_common, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=2, dataset=dict(**dataset_common, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_ann_file = data_root + 'annotations/val.json'
val_evaluator = [
    dict(type='CocoMetric', ann_file=val_ann_file, metric=['bbox', 'segm']),
    dict(type='ms_rcnn_mm.MaskIoUQualityMetric', ann_file=val_ann_file,
         boundary=True)
]
test_evaluator = val_evaluator

train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0,
         end=warmup_iters),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=warmup_iters,
         end=max_iters, eta_min=1e-5)
]
