"""A deterministic synthetic instance-segmentation dataset in COCO format.

Overlapping, partly occluded shapes of four classes on textured, noisy
backgrounds. Each class has its own shape and hue family (so a small network
can tell the classes apart in minutes), while size, aspect ratio, rotation,
shade and occlusion vary, and edges are blurred and noisy, so that masks are
hard at the boundaries. Visible masks (after occlusion) are stored as
compressed RLE.

Generation takes seconds and is cached: a folder whose ``manifest.json``
matches the requested settings is reused as it is.
"""
import argparse
import hashlib
import json
import os.path as osp
from pathlib import Path
from typing import Dict, List

import cv2
import numpy as np
import pycocotools.mask as mask_util

CLASSES = ('circle', 'triangle', 'square', 'star')
#: hue (OpenCV's 0-180 scale) of each class; shades vary around it
HUES = (0, 60, 110, 25)
HUE_JITTER = 8
#: version of the generator: bump it when the images change
VERSION = 1
JPEG_QUALITY = 95


def _shape_points(kind: str, rng: np.random.Generator, cx: float, cy: float,
                  radius: float) -> np.ndarray:
    """Polygon of ``kind`` around ``(cx, cy)``, rotated and stretched."""
    if kind == 'circle':
        angles = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        radii = np.ones_like(angles)
    elif kind == 'triangle':
        angles = np.array([0, 2 * np.pi / 3, 4 * np.pi / 3])
        radii = np.ones(3)
    elif kind == 'square':
        angles = np.array([0.25, 0.75, 1.25, 1.75]) * np.pi
        radii = np.ones(4)
    else:  # a five-pointed star
        angles = np.linspace(0, 2 * np.pi, 10, endpoint=False)
        radii = np.tile([1.0, 0.45], 5)
    aspect = rng.uniform(0.6, 1.4)
    turn = rng.uniform(0, 2 * np.pi)
    x = radius * radii * np.cos(angles) * aspect
    y = radius * radii * np.sin(angles) / aspect
    cos, sin = np.cos(turn), np.sin(turn)
    return np.stack([cx + cos * x - sin * y, cy + sin * x + cos * y], 1)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Low-frequency texture plus pixel noise, uint8 HxWx3 (BGR)."""
    coarse = rng.uniform(60, 200, (6, 6, 3)).astype(np.float32)
    texture = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
    stripes = 15 * np.sin(np.arange(size) / rng.uniform(3, 9))[:, None, None]
    img = texture + stripes + rng.normal(0, 12, (size, size, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def _colour(rng: np.random.Generator, label: int) -> tuple:
    hue = (HUES[label] + rng.integers(-HUE_JITTER, HUE_JITTER + 1)) % 180
    hsv = np.uint8([[[hue, rng.integers(150, 256), rng.integers(140, 256)]]])
    return tuple(int(c) for c in cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0])


def make_image(rng: np.random.Generator, size: int,
               max_instances: int) -> tuple:
    """One image and its instances: a list of ``(label, visible mask)``."""
    img = _background(rng, size)
    layers = []
    for _ in range(int(rng.integers(2, max_instances + 1))):
        label = int(rng.integers(len(CLASSES)))
        radius = rng.uniform(0.05, 0.2) * size
        cx, cy = rng.uniform(radius * 0.5, size - radius * 0.5, 2)
        points = _shape_points(CLASSES[label], rng, cx, cy, radius)
        mask = np.zeros((size, size), np.uint8)
        cv2.fillPoly(mask, [np.round(points * 8).astype(np.int32)], 1,
                     lineType=cv2.LINE_8, shift=3)
        layers.append((label, mask, _colour(rng, label)))
    visible = []
    for k, (label, mask, colour) in enumerate(layers):
        # later shapes occlude earlier ones
        occluders = [m for _, m, _ in layers[k + 1:]]
        seen = mask.copy()
        for m in occluders:
            seen[m > 0] = 0
        visible.append((label, seen))
        soft = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), 1.0)
        shade = np.array(colour, np.float32) * rng.uniform(0.85, 1.15)
        img = (img * (1 - soft[..., None]) + shade * soft[..., None])
    img = img + rng.normal(0, 8, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), visible


def _annotation(ann_id: int, image_id: int, label: int,
                mask: np.ndarray) -> Dict:
    rle = mask_util.encode(np.asfortranarray(mask))
    x, y, w, h = (float(v) for v in mask_util.toBbox(rle))
    rle['counts'] = rle['counts'].decode('ascii')
    return dict(id=ann_id, image_id=image_id, category_id=label + 1,
                segmentation=rle, area=float(mask.sum()), bbox=[x, y, w, h],
                iscrowd=0)


def write_split(root: Path, split: str, num_images: int, size: int,
                max_instances: int, seed: int) -> None:
    """Write ``root/<split>/*.jpg`` and ``root/annotations/<split>.json``."""
    rng = np.random.default_rng(seed)
    (root / split).mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for index in range(num_images):
        img, instances = make_image(rng, size, max_instances)
        name = f'{index:05d}.jpg'
        cv2.imwrite(str(root / split / name), img,
                    [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        image_id = index + 1
        images.append(dict(id=image_id, file_name=name, width=size,
                           height=size))
        for label, mask in instances:
            if mask.sum() > 0:
                annotations.append(_annotation(
                    len(annotations) + 1, image_id, label, mask))
    categories = [dict(id=i + 1, name=name) for i, name in enumerate(CLASSES)]
    (root / 'annotations').mkdir(exist_ok=True)
    with open(root / 'annotations' / f'{split}.json', 'w') as f:
        json.dump(dict(images=images, annotations=annotations,
                       categories=categories), f)


def generate(root: str, num_train: int = 300, num_val: int = 100,
             size: int = 256, max_instances: int = 8,
             seed: int = 0) -> Path:
    """Generate the dataset under ``root`` unless it is already there.

    Returns:
        Path: ``root``, holding ``train/``, ``val/`` and ``annotations/``.
    """
    settings = dict(version=VERSION, num_train=num_train, num_val=num_val,
                    size=size, max_instances=max_instances, seed=seed)
    root = Path(root)
    manifest = root / 'manifest.json'
    if manifest.is_file() and json.loads(manifest.read_text()) == settings:
        return root
    root.mkdir(parents=True, exist_ok=True)
    for offset, (split, num) in enumerate((('train', num_train),
                                           ('val', num_val))):
        write_split(root, split, num, size, max_instances, seed + offset)
    manifest.write_text(json.dumps(settings))
    return root


def digest(root: str) -> str:
    """SHA-256 of every file of a generated dataset (for determinism)."""
    sha = hashlib.sha256()
    for path in sorted(Path(root).rglob('*')):
        if path.is_file():
            sha.update(osp.relpath(path, root).encode())
            sha.update(path.read_bytes())
    return sha.hexdigest()


def main(argv: List[str] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('root')
    parser.add_argument('--num-train', type=int, default=300)
    parser.add_argument('--num-val', type=int, default=100)
    parser.add_argument('--size', type=int, default=256)
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args(argv)
    generate(args.root, args.num_train, args.num_val, args.size,
             seed=args.seed)
    print(f'dataset at {args.root}')


if __name__ == '__main__':
    main()
