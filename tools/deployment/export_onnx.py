"""Export a Mask Scoring R-CNN to ONNX; with --verify, check it against
PyTorch on an image.

The graph (ms_rcnn_mm.deployment.ONNXMaskScoringRCNN) takes one
preprocessed image, ``inputs`` ``(1, 3, H, W)`` float32 (normalised and
padded as the model's data preprocessor does), and returns, one row per
detection, ``boxes`` (in the input's pixels), ``labels``, ``scores``,
``mask_ious``, ``mask_scores``, ``maskness`` and ``masks`` (28x28
probabilities inside each box). It uses standard ONNX operators only
(``RoiAlign``, ``NonMaxSuppression``): onnxruntime runs it as it is.

Examples::

    python tools/deployment/export_onnx.py \\
        configs/demo/ms-rcnn_r18-w32_fpn_synthetic.py \\
        work_dirs/demo/iter_340.pth --out demo.onnx \\
        --verify data/synthetic/val/000000.png
    python tools/deployment/export_onnx.py \\
        configs/ms-rcnn/ms-rcnn-mm_r50_fpn_1x_coco.py epoch_12.pth \\
        --out ms-rcnn_r50.onnx --shape 800 1344

Exit status: 0; 1 when --verify finds a difference outside the
tolerances (ms_rcnn_mm.deployment.verify.TOLERANCES).
"""
import argparse
import sys
from typing import List, Optional

from mmdet.apis import init_detector
from mmengine.config import Config, DictAction

from ms_rcnn_mm.deployment import verify


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', help='model config file')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--out', required=True, help='the ONNX file written')
    parser.add_argument(
        '--shape', type=int, nargs=2, metavar=('H', 'W'),
        help='input size (default: the test Resize scale, landscape, '
        'padded to pad_size_divisor; a portrait image needs H > W)')
    parser.add_argument(
        '--verify', metavar='IMAGE',
        help='run the ONNX model (onnxruntime) and the PyTorch model on '
        'IMAGE and print the largest differences')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override config settings, e.g. model.test_cfg.rcnn.'
        'score_thr=0.3')
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    shape = tuple(args.shape) if args.shape else verify.default_shape(cfg)
    model = init_detector(cfg, args.checkpoint, device='cpu')
    verify.export(model, shape, args.out)
    print(f'wrote {args.out}: input (1, 3, {shape[0]}, {shape[1]})')
    if not args.verify:
        return 0
    inputs = verify.preprocess(model, cfg, args.verify, shape)
    diffs = verify.differences(
        verify.torch_predictions(model, inputs),
        verify.onnx_predictions(args.out, inputs),
        model.test_cfg.rcnn.mask_thr_binary)
    print(f'{args.verify}: {int(diffs["detections"])} detections; largest '
          'differences onnxruntime - PyTorch: ' + ', '.join(
              f'{name} {diffs[name]:.3g}' for name in verify.TOLERANCES) +
          f'; smallest mask IoU {diffs["mask_iou"]:.4f}')
    failed = verify.failures(diffs)
    for line in failed:
        print(f'outside tolerance: {line}', file=sys.stderr)
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
