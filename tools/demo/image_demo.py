"""Run an MS R-CNN on images and draw each mask labelled by its mask score.

mmdet 3.x's ``demo/image_demo.py`` for this package: the same arguments,
run through :class:`ms_rcnn_mm.apis.DetInferencer`, so the predictions
(``OUT_DIR/preds/<image>.json``) also hold ``mask_scores`` and
``mask_ious`` (and ``maskness`` where the model predicts it), and the drawn
images (``OUT_DIR/vis/<image>``) label each mask ``class: mask score``
(in percent, as mmdet writes scores).

Examples::

    python tools/demo/image_demo.py demo.jpg \\
        configs/demo/ms-rcnn_r18-w32_fpn_synthetic.py \\
        --weights work_dirs/demo/iter_340.pth --out-dir outputs
    # a folder of images, a config from the metafile by name
    python tools/demo/image_demo.py images/ ms-rcnn-mm_r50_fpn_1x_coco \\
        --weights epoch_12.pth --device cpu --batch-size 4
"""
from argparse import ArgumentParser, Namespace
from typing import List, Optional

import torch

from ms_rcnn_mm.apis import DetInferencer


def parse_args(argv: Optional[List[str]] = None) -> Namespace:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        'inputs', help='an image file or a folder of images')
    parser.add_argument(
        'model', nargs='?',
        help='a config file, or a model name of configs/ms-rcnn/'
        'metafile.yml; left out: the config saved in --weights')
    parser.add_argument('--weights', help='checkpoint file')
    parser.add_argument(
        '--out-dir', default='outputs',
        help='where vis/ and preds/ are written (default: %(default)s)')
    parser.add_argument(
        '--device', default='cuda:0' if torch.cuda.is_available() else 'cpu',
        help='device used for inference (default: %(default)s)')
    parser.add_argument(
        '--pred-score-thr', type=float, default=0.3,
        help='mask score below which instances are not drawn '
        '(default: %(default)s)')
    parser.add_argument(
        '--batch-size', type=int, default=1,
        help='images per forward (default: %(default)s)')
    parser.add_argument(
        '--show', action='store_true', help='show each drawn image')
    parser.add_argument(
        '--no-save-vis', action='store_true',
        help='do not write the drawn images')
    parser.add_argument(
        '--no-save-pred', action='store_true',
        help='do not write the predictions')
    parser.add_argument(
        '--print-result', action='store_true',
        help='print the predictions')
    parser.add_argument(
        '--palette', default='none',
        choices=['coco', 'voc', 'citys', 'random', 'none'],
        help="colour palette ('none': the config's or the checkpoint's)")
    args = parser.parse_args(argv)
    if args.model is None and args.weights is None:
        parser.error('give a config or model name, --weights, or both')
    return args


def main(argv: Optional[List[str]] = None) -> dict:
    """Run the inferencer; returns its result (``predictions``,
    ``visualization``)."""
    args = parse_args(argv)
    inferencer = DetInferencer(
        model=args.model, weights=args.weights, device=args.device,
        palette=args.palette)
    out_dir = '' if args.no_save_vis and args.no_save_pred else args.out_dir
    results = inferencer(
        args.inputs, batch_size=args.batch_size, out_dir=out_dir,
        pred_score_thr=args.pred_score_thr, show=args.show,
        no_save_vis=args.no_save_vis, no_save_pred=args.no_save_pred,
        print_result=args.print_result)
    if out_dir:
        print(f'results have been saved at {out_dir}')
    return results


if __name__ == '__main__':
    main()
