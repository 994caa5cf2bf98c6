"""tools/demo/image_demo.py: one image in, masks labelled by mask score out."""
import json
import subprocess
import sys

import cv2
import numpy as np
import torch
from helpers import REPO, build_model, random_shapes, render, tiny_model_cfg

CLASSES = ('disc', 'box', 'blob')
SIZE = 160


def test_image_demo_draws_masks_scored_by_cls_times_maskiou(tmp_path):
    """A tiny untrained model's detections: every mask score is the cls
    score times the predicted MaskIoU, and the drawing has the image's
    size."""
    cfg = tiny_model_cfg(num_classes=len(CLASSES))
    # an untrained head scores about 1 / (classes + 1): keep every detection
    cfg.model.test_cfg.rcnn.score_thr = 0.0
    config = tmp_path / 'tiny.py'
    cfg.dump(str(config))
    checkpoint = tmp_path / 'tiny.pth'
    torch.save(dict(state_dict=build_model(cfg).state_dict(),
                    meta=dict(dataset_meta=dict(classes=CLASSES))),
               checkpoint)
    rng = np.random.default_rng(0)
    image = tmp_path / 'shapes.png'
    cv2.imwrite(str(image), render(random_shapes(rng, SIZE, 4, 3), SIZE,
                                   rng)[..., ::-1])
    out, dets = tmp_path / 'drawn.png', tmp_path / 'dets.json'
    run = subprocess.run(
        [sys.executable, str(REPO / 'tools' / 'demo' / 'image_demo.py'),
         str(image), str(config), str(checkpoint), '--out-file', str(out),
         '--json', str(dets), '--min-score', '0'],
        capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    detections = json.loads(dets.read_text())
    assert len(detections) == cfg.model.test_cfg.rcnn.max_per_img
    assert f'{len(detections)} detections, {len(detections)} with' in \
        run.stdout
    score = np.array([d['score'] for d in detections])
    mask_iou = np.array([d['mask_iou'] for d in detections])
    mask_score = np.array([d['mask_score'] for d in detections])
    np.testing.assert_allclose(mask_score, score * mask_iou, rtol=1e-5)
    assert ((mask_iou >= 0) & (mask_iou <= 1)).all()
    assert {d['segmentation']['size'][0] for d in detections} == {SIZE}
    assert cv2.imread(str(out)).shape == (SIZE, SIZE, 3)
