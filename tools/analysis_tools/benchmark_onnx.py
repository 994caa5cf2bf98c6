"""Time the ONNX export of an MS R-CNN under onnxruntime against PyTorch on
the CPU, one image, exactly 100 detections.

Three ways to predict, interleaved (A B C A B C ...), ``--warmup`` rounds
then ``--repeats`` measured ones, medians printed with their ratio to
PyTorch's ``predict``:

- ``pytorch predict``: ``model.predict`` (masks pasted into the image);
- ``pytorch graph``: the exported graph run eagerly by PyTorch
  (:class:`ms_rcnn_mm.deployment.ONNXMaskScoringRCNN`, 28x28 masks);
- ``onnxruntime``: the ONNX file on onnxruntime's CPU provider, with as
  many threads as torch.

Random weights with the score threshold at 0 (every image keeps
``max_per_img`` detections), a generated image: no download, no dataset.
It also prints the largest differences between onnxruntime and PyTorch.

Example::

    python tools/analysis_tools/benchmark_onnx.py \\
        configs/demo/ms-rcnn_r18-w32_fpn_synthetic.py --shape 256 256
    python tools/analysis_tools/benchmark_onnx.py \\
        configs/ms-rcnn/ms-rcnn-mm_r50_fpn_1x_coco.py --shape 512 512
"""
import argparse
import os.path as osp
import statistics
import tempfile
import time

import numpy as np
import torch
from mmengine.config import DictAction

import ms_rcnn_mm  # noqa: F401  (registers the package's modules)
from ms_rcnn_mm.analysis.models import (OURS, build_variants, force_detections,
                                        load_config, synthetic_batch)
from ms_rcnn_mm.deployment import ONNXMaskScoringRCNN, verify


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', help='MS R-CNN config file')
    parser.add_argument('--shape', type=int, nargs=2, default=(512, 512),
                        metavar=('H', 'W'),
                        help='input size (default: %(default)s)')
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    return parser.parse_args(argv)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv=None) -> dict:
    args = parse_args(argv)
    import onnxruntime
    cfg = load_config(args.config, args.cfg_options)
    model = build_variants(force_detections(cfg.model), (OURS, ),
                           args.seed)[OURS].eval()
    data = model.data_preprocessor(
        synthetic_batch(1, *args.shape, seed=args.seed), False)
    inputs = data['inputs']
    graph = ONNXMaskScoringRCNN(model).eval()
    with tempfile.TemporaryDirectory() as tmp:
        path = osp.join(tmp, 'model.onnx')
        verify.export(model, tuple(inputs.shape[-2:]), path)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        session = onnxruntime.InferenceSession(
            path, options, providers=['CPUExecutionProvider'])
    feed = {'inputs': inputs.numpy()}
    runs = {
        'pytorch predict': lambda: verify.torch_predictions(model, inputs),
        'pytorch graph': lambda: graph(inputs),
        'onnxruntime': lambda: session.run(None, feed),
    }
    times = {name: [] for name in runs}
    with torch.no_grad():
        for round_ in range(args.warmup + args.repeats):
            for name, run in runs.items():
                seconds = timed(run)
                if round_ >= args.warmup:
                    times[name].append(seconds)
    medians = {name: statistics.median(t) * 1e3 for name, t in times.items()}
    outputs = dict(zip(verify.OUTPUT_NAMES, session.run(None, feed)))
    diffs = verify.differences(verify.torch_predictions(model, inputs),
                               outputs, model.test_cfg.rcnn.mask_thr_binary)
    base = medians['pytorch predict']
    print(f'{args.config}, input {tuple(inputs.shape)}, '
          f'{int(diffs["detections"])} detections, '
          f'{torch.get_num_threads()} threads, onnxruntime '
          f'{onnxruntime.__version__}, median of {args.repeats}')
    print('| run | ms | x pytorch predict |\n|---|---|---|')
    for name, ms in medians.items():
        print(f'| {name} | {ms:.1f} | {ms / base:.3f} |')
    print('largest differences onnxruntime - PyTorch: ' + ', '.join(
        f'{name} {diffs[name]:.3g}' for name in verify.TOLERANCES) +
        f'; smallest mask IoU {diffs["mask_iou"]:.4f}')
    return dict(medians_ms=medians, differences=diffs,
                all_ms={k: list(np.array(v) * 1e3) for k, v in times.items()})


if __name__ == '__main__':
    main()
