"""Bad input gets an error of a known type that names the file, field or
value; imperfect annotations are skipped, counted and reported."""
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers import tiny_model_cfg
from mmdet.registry import DATASETS, MODELS

from ms_rcnn_mm.datasets import (AnnotationFileError, AnnotationWarning,
                                 CheckedLoadImageFromFile, ImageFileError)
from ms_rcnn_mm.datasets.checked import (FEW_POINTS, NO_POLYGON, OUTSIDE,
                                         UNKNOWN_CATEGORY, ZERO_AREA)

SIZE = 64
CLASSES = ('a', 'b')
SQUARE = [10, 10, 30, 10, 30, 30, 10, 30]  # 20x20, area 400


def write_image(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((SIZE, SIZE, 3), 128, np.uint8))


def annotation(ann_id: int, polygons: list, category_id: int = 1,
               image_id: int = 1) -> dict:
    return dict(id=ann_id, image_id=image_id, category_id=category_id,
                bbox=[10, 10, 20, 20], area=400, iscrowd=0,
                segmentation=polygons)


def coco(annotations: list, num_images: int = 1) -> dict:
    return dict(
        images=[dict(id=i, file_name=f'{i}.png', width=SIZE, height=SIZE)
                for i in range(1, num_images + 1)],
        annotations=annotations,
        categories=[dict(id=i + 1, name=name)
                    for i, name in enumerate(CLASSES)])


def build_dataset(root: Path, content,
                  loader: dict = None) -> object:
    """A CheckedCocoDataset over ``content`` (a dict, or raw text) whose
    pipeline loads images with ``loader``."""
    ann = root / 'ann.json'
    ann.write_text(content if isinstance(content, str) else
                   json.dumps(content))
    for i in range(1, 3):
        write_image(root / 'img' / f'{i}.png')
    return DATASETS.build(dict(
        type='ms_rcnn_mm.CheckedCocoDataset', data_root=str(root),
        ann_file='ann.json', data_prefix=dict(img='img/'),
        metainfo=dict(classes=CLASSES), filter_cfg=None,
        pipeline=[loader or dict(type='ms_rcnn_mm.CheckedLoadImageFromFile'),
                  dict(type='LoadAnnotations', with_bbox=True,
                       with_mask=True),
                  dict(type='PackDetInputs')]))


def test_missing_image_names_the_file(tmp_path):
    path = tmp_path / 'nowhere.jpg'
    with pytest.raises(FileNotFoundError, match=f'image {path} does not'):
        CheckedLoadImageFromFile()(dict(img_path=str(path)))


def test_unreadable_image_names_the_file(tmp_path):
    folder = tmp_path / 'a_folder.jpg'  # readable by no one, root included
    folder.mkdir()
    with pytest.raises(IsADirectoryError,
                       match=f'image {folder} can not be read'):
        CheckedLoadImageFromFile()(dict(img_path=str(folder)))


@pytest.mark.parametrize('content', [b'not an image at all', b''])
def test_corrupt_image_names_the_file(tmp_path, content):
    path = tmp_path / 'corrupt.jpg'
    path.write_bytes(content)
    with pytest.raises(ImageFileError,
                       match=f'image {path} is corrupt or not an image'):
        CheckedLoadImageFromFile()(dict(img_path=str(path)))


def test_good_image_loads_as_mmcv_does(tmp_path):
    path = tmp_path / 'ok.png'
    write_image(path)
    results = CheckedLoadImageFromFile()(dict(img_path=str(path)))
    assert results['img'].shape == (SIZE, SIZE, 3)
    assert int(results['img'][0, 0, 0]) == 128


def test_dataset_loads_mmcv_loader_as_the_checked_one(tmp_path):
    """A pipeline naming mmcv's ``LoadImageFromFile`` (as the configs do,
    for mmdet's ``DetInferencer``) loads through the checked loader, with
    its arguments: a corrupt image fails with the image named.

    Catches the dataset building mmcv's loader as it is (a corrupt image
    then fails with an ``AssertionError``) or dropping its arguments."""
    dataset = build_dataset(
        tmp_path, coco([annotation(1, [SQUARE])]),
        loader=dict(type='LoadImageFromFile', color_type='grayscale'))
    loader = dataset.pipeline.transforms[0]
    assert type(loader) is CheckedLoadImageFromFile
    assert loader.color_type == 'grayscale'
    image = tmp_path / 'img' / '1.png'
    image.write_bytes(b'not an image at all')
    with pytest.raises(ImageFileError,
                       match=f'image {image} is corrupt or not an image'):
        dataset[0]


def test_missing_annotation_file_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match='nowhere.json'):
        DATASETS.build(dict(type='ms_rcnn_mm.CheckedCocoDataset',
                            ann_file=str(tmp_path / 'nowhere.json'),
                            metainfo=dict(classes=CLASSES), pipeline=[]))


@pytest.mark.parametrize('content, pattern', [
    ('{"images": [', r'ann.json is not valid JSON: Expecting value: line 1'),
    ('[1, 2]', r'ann.json holds a JSON list, not an object'),
])
def test_invalid_json_names_the_file(tmp_path, content, pattern):
    with pytest.raises(AnnotationFileError, match=pattern) as err:
        build_dataset(tmp_path, content)
    assert str(tmp_path / 'ann.json') in str(err.value)


@pytest.mark.parametrize('missing', ['images', 'annotations', 'categories'])
def test_annotation_file_without_a_coco_field_names_it(tmp_path, missing):
    content = coco([annotation(1, [SQUARE])])
    content.pop(missing)
    with pytest.raises(AnnotationFileError,
                       match=f'ann.json has no {missing} field'):
        build_dataset(tmp_path, content)


def test_annotation_without_bbox_names_the_annotation(tmp_path):
    ann = annotation(7, [SQUARE])
    ann.pop('bbox')
    with pytest.raises(AnnotationFileError,
                       match='annotation 7 of image 1 has no bbox field'):
        build_dataset(tmp_path, coco([ann]))


def test_image_without_size_names_the_image(tmp_path):
    content = coco([annotation(1, [SQUARE])])
    content['images'][0].pop('height')
    with pytest.raises(AnnotationFileError,
                       match='image 1 has no height field'):
        build_dataset(tmp_path, content)


def test_bad_polygons_and_categories_are_skipped_and_counted(tmp_path):
    outside = [SIZE + 5, 0, SIZE + 20, 0, SIZE + 20, 10]
    content = coco([
        annotation(1, [SQUARE]),
        annotation(2, [[10, 10, 20, 20]]),  # 2 points
        annotation(3, [[0, 0, 10, 10, 20, 20]]),  # collinear: area 0
        annotation(4, [outside]),
        annotation(5, [SQUARE], category_id=99),
        annotation(6, [[1, 1, 2, 2], SQUARE]),  # keeps its good part
        annotation(7, [SQUARE], image_id=2),
    ], num_images=2)
    with pytest.warns(AnnotationWarning) as record:
        dataset = build_dataset(tmp_path, content)
    assert dict(dataset.skipped) == {
        FEW_POINTS: 2, ZERO_AREA: 1, OUTSIDE: 1, NO_POLYGON: 3,
        UNKNOWN_CATEGORY: 1}
    message = str(record[0].message)
    assert str(tmp_path / 'ann.json') in message
    assert '1 x category_id outside the classes (e.g. annotation 5 of ' \
        'image 1 (1.png) 99)' in message
    assert '2 x polygon with fewer than 3 points' in message
    # nothing bad reaches the pipeline: every sample loads and packs
    assert len(dataset) == 2
    counts = [len(dataset[i]['data_samples'].gt_instances)
              for i in range(len(dataset))]
    assert counts == [2, 1]
    masks = dataset[0]['data_samples'].gt_instances.masks
    assert masks.areas.tolist() == [400, 400]


def test_clean_annotations_warn_nothing(tmp_path, recwarn):
    dataset = build_dataset(tmp_path, coco([annotation(1, [SQUARE])]))
    assert not dataset.skipped
    assert not [w for w in recwarn if w.category is AnnotationWarning]


def heads_cfg(**changes):
    cfg = tiny_model_cfg(num_classes=3)
    for path, value in changes.items():
        node = cfg.model
        *parents, leaf = path.split('.')
        for key in parents:
            node = node[key]
        node[leaf] = value
    return cfg


@pytest.mark.parametrize('head, value', [('mask_iou_head', 5),
                                         ('mask_head', 4), ('bbox_head', 2)])
def test_num_classes_that_disagree_are_rejected(head, value):
    cfg = heads_cfg(**{f'roi_head.{head}.num_classes': value})
    with pytest.raises(ValueError, match='num_classes differs') as err:
        MODELS.build(cfg.model)
    assert f'{head}.num_classes={value}' in str(err.value)
    others = {'bbox_head', 'mask_head', 'mask_iou_head'} - {head}
    for other in others:
        assert f'{other}.num_classes=3' in str(err.value)


def test_roi_feat_size_that_mismatches_the_extractor_is_rejected():
    cfg = heads_cfg(**{'roi_head.mask_iou_head.roi_feat_size': 7})
    with pytest.raises(ValueError) as err:
        MODELS.build(cfg.model)
    assert 'mask_iou_head.roi_feat_size=7' in str(err.value)
    assert 'output_size=(14, 14)' in str(err.value)


@pytest.mark.parametrize('path, valid', [
    ('roi_head.mask_iou_head.num_conv', 'num_convs'),
    ('roi_head.mask_iou_heads', 'mask_iou_head'),
])
def test_unknown_head_keys_are_rejected_with_the_valid_keys(path, valid):
    cfg = heads_cfg(**{path: 1})
    with pytest.raises(TypeError) as err:
        MODELS.build(cfg.model)
    message = str(err.value)
    assert f'has no config key {path.split(".")[-1]};' in message
    valid_keys = message.split('valid keys are ')[1].split(', ')
    assert valid in valid_keys and 'init_cfg' in valid_keys


def test_consistent_heads_build():
    model = MODELS.build(tiny_model_cfg(num_classes=3).model)
    assert model.roi_head.mask_iou_head.num_classes == 3
