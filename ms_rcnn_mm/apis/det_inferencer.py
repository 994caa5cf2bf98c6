"""MMDetection's ``DetInferencer`` for Mask Scoring R-CNN models."""
import os.path as osp
from typing import Dict, List, Optional, Sequence

import mmengine
from mmdet.apis import DetInferencer as MMDetInferencer
from mmdet.structures import DetDataSample

from ..registry import SCOPE

#: per-detection fields of ``pred_instances`` that mmdet's ``pred2dict``
#: leaves out and this inferencer writes, each where the model predicts it
SCORE_FIELDS = ('mask_scores', 'mask_ious', 'maskness')


def scored_by_mask(data_sample: DetDataSample) -> DetDataSample:
    """``data_sample`` whose predicted ``scores`` are its ``mask_scores``.

    mmdet's visualiser labels and thresholds each instance by ``scores``;
    drawn from this sample, a mask is labelled by its mask score. The
    sample itself is left as it is (the copy shares the other fields).

    Args:
        data_sample (DetDataSample): A prediction; one without
            ``pred_instances.mask_scores`` is returned as it is.

    Returns:
        DetDataSample: The sample to draw.
    """
    instances = data_sample.get('pred_instances')
    if instances is None or 'mask_scores' not in instances:
        return data_sample
    drawn = data_sample.clone()
    drawn.pred_instances = instances.clone()
    drawn.pred_instances.scores = instances.mask_scores
    return drawn


class DetInferencer(MMDetInferencer):
    """mmdet's ``DetInferencer`` that also returns the mask scores.

    Predictions hold, beside mmdet's ``labels``, ``scores``, ``bboxes`` and
    ``masks``, every field of :data:`SCORE_FIELDS` that the model's
    ``pred_instances`` have (``mask_scores``, ``mask_ious`` and ``maskness``:
    one float per detection), in the returned dicts and in the JSON files
    of ``out_dir/preds``. Drawn images label each mask ``class: mask score``
    (mmdet's visualiser writes it in percent), and ``pred_score_thr``
    applies to the mask score.

    Args:
        model (str, optional): A config file, a model name of
            ``configs/ms-rcnn/metafile.yml`` (in the ``ms_rcnn_mm`` scope),
            or None to read the config from ``weights``.
        weights (str, optional): A checkpoint file.
        device (str, optional): ``'cpu'``, ``'cuda:0'``, ...; None picks
            CUDA when available.
        scope (str): The default registry scope and the package whose
            metafile names resolve. Defaults to ``'ms_rcnn_mm'``.
        palette (str): Colour palette, as mmdet's. Defaults to ``'none'``.
        show_progress (bool): Show a progress bar. Defaults to True.
    """

    def __init__(self,
                 model: Optional[str] = None,
                 weights: Optional[str] = None,
                 device: Optional[str] = None,
                 scope: str = SCOPE,
                 palette: str = 'none',
                 show_progress: bool = True) -> None:
        super().__init__(model=model, weights=weights, device=device,
                         scope=scope, palette=palette,
                         show_progress=show_progress)

    def visualize(self, inputs: list, preds: Sequence[DetDataSample],
                  **kwargs) -> Optional[List]:
        """Draw as mmdet's inferencer does, each mask labelled by its mask
        score."""
        return super().visualize(inputs, [scored_by_mask(p) for p in preds],
                                 **kwargs)

    def pred2dict(self, data_sample: DetDataSample,
                  pred_out_dir: str = '') -> Dict:
        """mmdet's prediction dict plus the fields of :data:`SCORE_FIELDS`.

        Args:
            data_sample (DetDataSample): A prediction of the model.
            pred_out_dir (str): Where to write ``preds/<image>.json`` (the
                file name mmdet gives it); ``''`` writes nothing.

        Returns:
            dict: JSON-serialisable prediction.
        """
        result = super().pred2dict(data_sample)
        instances = data_sample.get('pred_instances')
        for field in SCORE_FIELDS:
            if instances is not None and field in instances:
                result[field] = instances.get(field).cpu().tolist()
        if pred_out_dir:
            mmengine.dump(result, self._pred_file(data_sample, pred_out_dir))
        return result

    def _pred_file(self, data_sample: DetDataSample, pred_out_dir: str) -> str:
        """``preds/<image name>.json``, or ``preds/<count>.json`` for an
        image given as an array, as mmdet names them."""
        img_path = data_sample.get('img_path')
        if img_path:
            name = osp.splitext(osp.basename(img_path))[0]
        else:
            name = str(self.num_predicted_imgs)
            self.num_predicted_imgs += 1
        return osp.join(pred_out_dir, 'preds', f'{name}.json')
