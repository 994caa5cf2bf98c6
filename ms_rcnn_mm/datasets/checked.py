"""COCO data that fails loudly where it is broken, and skips what it can.

:class:`CheckedCocoDataset` is mmdet's ``CocoDataset`` with checks, decided
per case:

========================================  ==================================
Problem                                   What happens
========================================  ==================================
annotation file missing                   ``FileNotFoundError`` (the file)
not valid JSON, not a JSON object         :class:`AnnotationFileError`
                                          (the file, the parser's message)
no ``images``/``annotations``/            :class:`AnnotationFileError` (the
``categories``                            file, the missing fields)
an image or annotation without a field    :class:`AnnotationFileError` (the
it needs (``file_name``, ``bbox``, ...)   file, the id, the field)
polygon of fewer than 3 points,           that polygon is dropped; an
zero-area polygon, polygon entirely       annotation left with none is
outside its image                         skipped
``category_id`` outside the classes       annotation skipped
========================================  ==================================

Skipped polygons and annotations are counted per reason and reported in one
:class:`AnnotationWarning` per dataset (with an example of each), and kept in
``dataset.skipped``; training then runs on what is left and never meets them
mid-epoch. :class:`CheckedLoadImageFromFile` is mmcv's ``LoadImageFromFile``
whose errors name the image: ``FileNotFoundError`` (missing),
``OSError`` such as ``PermissionError`` (unreadable) and
:class:`ImageFileError` (corrupt or not an image). The dataset builds the
``LoadImageFromFile`` of its pipeline as that class, so configs keep mmcv's
name, the one mmdet's ``DetInferencer`` looks for in the test pipeline.
"""
import json
import os.path as osp
import warnings
from collections import Counter
from typing import Callable, Dict, List, Optional, Sequence, Union

import numpy as np
from mmcv.transforms import LoadImageFromFile
from mmdet.datasets import CocoDataset
from mmdet.datasets.api_wrappers import COCO

from ..registry import DATASETS, TRANSFORMS, scoped

#: top-level fields of a COCO annotation file
COCO_FIELDS = ('images', 'annotations', 'categories')
#: fields :class:`CocoDataset` reads from each image and annotation
IMAGE_FIELDS = ('id', 'file_name', 'width', 'height')
ANNOTATION_FIELDS = ('bbox', 'category_id')
#: a polygon is a flat list of x, y coordinates of at least 3 points
MIN_POLYGON_COORDS = 6
#: reasons for skipping, as they are counted in ``dataset.skipped``
FEW_POINTS = 'polygon with fewer than 3 points'
ZERO_AREA = 'zero-area polygon'
OUTSIDE = 'polygon outside its image'
NO_POLYGON = 'annotation without a valid polygon'
UNKNOWN_CATEGORY = 'category_id outside the classes'
#: the image loader of a pipeline that :class:`CheckedCocoDataset` checks
PLAIN_LOADERS = ('LoadImageFromFile', LoadImageFromFile)

Transform = Union[dict, Callable]


class AnnotationFileError(ValueError):
    """An annotation file that cannot be used; the message names it."""


class ImageFileError(ValueError):
    """An image file that cannot be decoded; the message names it."""


class AnnotationWarning(UserWarning):
    """Annotations were skipped; the message counts them per reason."""


def read_coco_json(path: str) -> dict:
    """Read a COCO annotation file, with errors that name it.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        AnnotationFileError: not JSON, not an object, or without
            ``images``/``annotations``/``categories``.
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f'annotation file {path} does not exist')
    try:
        with open(path, encoding='utf-8') as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise AnnotationFileError(
            f'annotation file {path} is not valid JSON: {err}') from err
    if not isinstance(data, dict):
        raise AnnotationFileError(
            f'annotation file {path} holds a JSON {type(data).__name__}, '
            f'not an object with {", ".join(COCO_FIELDS)}')
    missing = [field for field in COCO_FIELDS if field not in data]
    if missing:
        raise AnnotationFileError(
            f'annotation file {path} has no {", ".join(missing)} field '
            f'(a COCO file needs {", ".join(COCO_FIELDS)})')
    return data


class CheckedCOCO(COCO):
    """mmdet's COCO API over :func:`read_coco_json`."""

    def __init__(self, annotation_file: str) -> None:
        super().__init__(annotation_file=None)
        self.dataset = read_coco_json(annotation_file)
        self.createIndex()
        self.img_ann_map = self.imgToAnns
        self.cat_img_map = self.catToImgs


def polygon_area(coords: np.ndarray) -> float:
    """Shoelace area of a polygon given as ``(n, 2)`` points."""
    x, y = coords[:, 0], coords[:, 1]
    return 0.5 * abs(
        float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


def polygon_problem(polygon: list, width: float,
                    height: float) -> Optional[str]:
    """Why ``polygon`` (flat ``x, y`` list) is unusable, or None."""
    if len(polygon) < MIN_POLYGON_COORDS or len(polygon) % 2:
        return FEW_POINTS
    coords = np.asarray(polygon, dtype=np.float64).reshape(-1, 2)
    if polygon_area(coords) <= 0:
        return ZERO_AREA
    low, high = coords.min(0), coords.max(0)
    if high[0] <= 0 or high[1] <= 0 or low[0] >= width or low[1] >= height:
        return OUTSIDE
    return None


def checked_loader(transform: Transform) -> Transform:
    """``transform``, or :class:`CheckedLoadImageFromFile` with its arguments
    where it is mmcv's ``LoadImageFromFile`` (by config name or class)."""
    if isinstance(transform, dict) and transform.get('type') in PLAIN_LOADERS:
        return dict(transform, type=scoped('CheckedLoadImageFromFile'))
    return transform


@DATASETS.register_module()
class CheckedCocoDataset(CocoDataset):
    """mmdet's ``CocoDataset`` with the checks of :mod:`.checked`.

    Takes the arguments of ``CocoDataset``. Its pipeline's
    ``LoadImageFromFile`` runs as :class:`CheckedLoadImageFromFile`, whose
    errors name the image. After loading, ``skipped`` maps each reason to
    the number of polygons or annotations skipped for it.
    """

    COCOAPI = CheckedCOCO

    def __init__(self, *args, pipeline: Sequence[Transform] = (),
                 **kwargs) -> None:
        super().__init__(
            *args, pipeline=[checked_loader(t) for t in pipeline], **kwargs)

    def load_data_list(self) -> List[dict]:
        """Load, check and report the skipped annotations once."""
        self.skipped: Counter = Counter()
        self._examples: Dict[str, str] = {}
        data_list = super().load_data_list()
        if self.skipped:
            counts = '; '.join(
                f'{count} x {reason} (e.g. {self._examples[reason]})'
                for reason, count in sorted(self.skipped.items()))
            warnings.warn(
                f'{self.ann_file}: skipped {counts}', AnnotationWarning,
                stacklevel=2)
        return data_list

    def parse_data_info(self, raw_data_info: dict) -> dict:
        """Check the image's fields and drop unusable annotations, then parse
        as ``CocoDataset``."""
        img = raw_data_info['raw_img_info']
        self._require(img, IMAGE_FIELDS, f'image {img.get("id")}')
        raw_data_info['raw_ann_info'] = [
            ann for ann in (self._checked(ann, img)
                            for ann in raw_data_info['raw_ann_info'])
            if ann is not None
        ]
        return super().parse_data_info(raw_data_info)

    def _require(self, entry: dict, fields: tuple, what: str) -> None:
        missing = [field for field in fields if field not in entry]
        if missing:
            raise AnnotationFileError(
                f'annotation file {self.ann_file}: {what} has no '
                f'{", ".join(missing)} field')

    def _skip(self, reason: str, ann: dict, img: dict, value=None) -> None:
        self.skipped[reason] += 1
        detail = '' if value is None else f' {value!r}'
        self._examples.setdefault(
            reason, f'annotation {ann.get("id")} of image {img["id"]} '
            f'({img["file_name"]}){detail}')

    def _checked(self, ann: dict, img: dict) -> Optional[dict]:
        """``ann`` without its unusable polygons, or None to skip it."""
        self._require(ann, ANNOTATION_FIELDS,
                      f'annotation {ann.get("id")} of image {img["id"]}')
        if ann['category_id'] not in self.cat_ids:
            self._skip(UNKNOWN_CATEGORY, ann, img, ann['category_id'])
            return None
        polygons = ann.get('segmentation')
        if not isinstance(polygons, list) or not polygons:
            return ann  # RLE, or no mask
        kept = []
        for polygon in polygons:
            problem = polygon_problem(polygon, img['width'], img['height'])
            if problem is None:
                kept.append(polygon)
            else:
                self._skip(problem, ann, img)
        if not kept:
            self._skip(NO_POLYGON, ann, img)
            return None
        return dict(ann, segmentation=kept)


@TRANSFORMS.register_module()
class CheckedLoadImageFromFile(LoadImageFromFile):
    """mmcv's ``LoadImageFromFile`` whose errors name the image file.

    Takes the arguments of ``LoadImageFromFile``; with ``ignore_empty=True``
    an unreadable image still gives None, as there.
    """

    def transform(self, results: dict) -> Optional[dict]:
        """Load ``results['img_path']``.

        Raises:
            FileNotFoundError: the image does not exist.
            OSError: it can not be read (``PermissionError``,
                ``IsADirectoryError``, ...).
            ImageFileError: it is corrupt or not an image.
        """
        path = results['img_path']
        try:
            return super().transform(results)
        except FileNotFoundError as err:
            raise FileNotFoundError(f'image {path} does not exist') from err
        except OSError as err:  # permissions, a folder, an I/O error
            raise type(err)(err.errno, f'image {path} can not be read '
                            f'({err.strerror or err})') from err
        except Exception as err:  # decoders fail with assorted types
            raise ImageFileError(
                f'image {path} is corrupt or not an image '
                f'({type(err).__name__}: {err})') from err
