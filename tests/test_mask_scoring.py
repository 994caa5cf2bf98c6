"""What the MaskIoU head reads (``mask_input``, ``detach_mask``), maskness,
and predicting from several threads at once."""
import copy
import threading

import numpy as np
import pytest
import torch
from helpers import (build_model, predict, preprocess, synthetic_batch,
                     tiny_model_cfg)
from mmdet.models.roi_heads.mask_heads import MaskIoUHead as MMDetMaskIoUHead
from mmdet.structures.bbox import bbox2roi

from ms_rcnn_mm.models import MaskIoUHead

NUM_CLASSES = 3


@pytest.fixture(scope='module')
def batch():
    return synthetic_batch(num_images=2, size=96, num_instances=[3, 4])


def predicting_cfg(**mask_iou_head):
    cfg = tiny_model_cfg(NUM_CLASSES)
    cfg.model.roi_head.mask_iou_head.update(mask_iou_head)
    # keep every detection of an untrained model: a non-trivial contract
    cfg.model.test_cfg.rcnn.score_thr = 0.0
    return cfg


def mmdet_head_and_inputs(seed=0):
    torch.manual_seed(seed)
    theirs = MMDetMaskIoUHead(num_classes=5, in_channels=8,
                              conv_out_channels=8, fc_out_channels=16)
    theirs.init_weights()
    return theirs, torch.randn(6, 8, 14, 14), torch.randn(6, 28, 28)


def test_probability_input_reproduces_mmdet_and_logit_input_does_not():
    """mmdet 3.3.0's head takes the sigmoid of the logits it is given: the
    default ``'probability'`` reproduces it with its weights, ``'logit'``
    feeds the logits themselves (checked through mmdet's head given
    logit(x) for x in (0, 1): it convolves sigmoid(logit(x)) = x).

    Catches: a sigmoid dropped from or added to either mode, the switch
    ignored.
    """
    theirs, feats, logits = mmdet_head_and_inputs()
    kwargs = dict(num_classes=5, in_channels=8, conv_out_channels=8,
                  fc_out_channels=16)
    prob = MaskIoUHead(**kwargs)
    raw = MaskIoUHead(mask_input='logit', **kwargs)
    for ours in (prob, raw):
        ours.load_state_dict(theirs.state_dict(), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(prob(feats, logits), theirs(feats, logits))
        inside = torch.rand(6, 28, 28) * 0.98 + 0.01
        torch.testing.assert_close(raw(feats, inside),
                                   theirs(feats, torch.logit(inside)))
        assert (raw(feats, logits) - theirs(feats, logits)).abs().max() > 1e-3


def test_mmdet_checkpoint_gives_mmdet_mask_ious(batch):
    """A whole mmdet MS R-CNN state dict loads into ours (default
    ``'probability'``) and gives mmdet's MaskIoU for every detection; with
    ``'logit'`` it would not.

    Catches: a default that does not match mmdet's checkpoints.
    """
    cfg = predicting_cfg()
    theirs_cfg = copy.deepcopy(cfg)
    theirs_cfg.model.type = 'MaskScoringRCNN'
    theirs_cfg.model.roi_head.type = 'MaskScoringRoIHead'
    theirs_cfg.model.roi_head.mask_iou_head.type = 'MaskIoUHead'
    theirs = build_model(theirs_cfg, seed=1).eval()
    results = {}
    for mask_input in ('probability', 'logit'):
        ours = build_model(predicting_cfg(mask_input=mask_input),
                           seed=2).eval()
        ours.load_state_dict(theirs.state_dict(), strict=True)
        results[mask_input] = predict(ours, batch)
    for prob, raw, ref in zip(results['probability'], results['logit'],
                              predict(theirs, batch)):
        assert len(prob) == len(ref) > 0
        # mmdet overwrites scores with cls * MaskIoU (not clamped to [0, 1])
        theirs_ious = (ref.scores / prob.scores).clamp(0, 1)
        assert theirs_ious.max() > 0
        torch.testing.assert_close(prob.mask_ious, theirs_ious)
        assert (raw.mask_ious - theirs_ious).abs().max() > 1e-4


def test_unknown_mask_input_is_named():
    with pytest.raises(ValueError, match="mask_input='sigmoid'"):
        MaskIoUHead(mask_input='sigmoid')


@pytest.mark.parametrize('detach', [False, True])
def test_detach_mask_stops_the_gradient_into_the_mask(detach):
    """Catches: ``detach_mask`` ignored, or detaching the RoI features
    too."""
    head = MaskIoUHead(num_classes=2, in_channels=4, conv_out_channels=4,
                       fc_out_channels=8, detach_mask=detach)
    feats = torch.randn(3, 4, 14, 14, requires_grad=True)
    logits = torch.randn(3, 28, 28, requires_grad=True)
    head(feats, logits).sum().backward()
    assert feats.grad.abs().sum() > 0
    if detach:
        assert logits.grad is None
    else:
        assert logits.grad.abs().sum() > 0


def brute_force_maskness(logits, thr=0.5):
    probs = 1 / (1 + np.exp(-logits.astype(np.float64)))
    out = []
    for p in probs:
        fg = p[p > thr]
        out.append(fg.mean() if fg.size else 0.0)
    return np.array(out)


def test_maskness_of_each_detection(batch):
    """``maskness`` is SOLOv2's: the mean probability over the pixels above
    ``mask_thr_binary`` of the detection's 28x28 mask of its class, before
    pasting (0 without such a pixel); recomputed here from the mask head's
    logits on the detections' boxes.

    Catches: another class's channel, the pasted image-size mask, logits in
    place of probabilities, the mean over all pixels.
    """
    model = build_model(predicting_cfg(), seed=3).eval()
    preds = predict(model, batch)
    data = preprocess(model, copy.deepcopy(batch), training=False)
    with torch.no_grad():
        x = model.extract_feat(data['inputs'])
        logits = model.roi_head._mask_forward(
            x, bbox2roi([p.bboxes for p in preds]))['mask_preds']
    labels = torch.cat([p.labels for p in preds])
    chosen = logits[torch.arange(len(labels)), labels].numpy()
    want = brute_force_maskness(chosen)
    got = torch.cat([p.maskness for p in preds]).numpy()
    assert len(got) > 50 and np.ptp(want) > 0.01
    np.testing.assert_allclose(got, want, atol=1e-5)
    for p in preds:
        assert p.maskness.shape == p.scores.shape


def test_no_detection_has_empty_maskness(batch):
    cfg = predicting_cfg()
    cfg.model.test_cfg.rcnn.score_thr = 1.1
    for pred in predict(build_model(cfg, seed=4).eval(), batch):
        assert len(pred) == 0 and pred.maskness.shape == (0, )


def test_two_threads_predict_what_each_predicts_alone():
    """One model, two threads predicting different batches at once: each
    gets exactly what it gets alone.

    Catches: per-call state on the module (the methods that used to be
    swapped on the instance during each prediction).
    """
    model = build_model(predicting_cfg(), seed=5).eval()
    batches = [synthetic_batch(num_images=2, size=96, num_instances=n,
                               seed=s)
               for s, n in ((1, [2, 3]), (2, [4, 1]))]
    alone = [predict(model, b) for b in batches]
    together = [None, None]
    start = threading.Barrier(2)

    def work(k):
        start.wait()
        for _ in range(3):
            together[k] = predict(model, batches[k])

    threads = [threading.Thread(target=work, args=(k, )) for k in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for solo, both in zip(alone, together):
        for a, b in zip(solo, both):
            for key in ('bboxes', 'scores', 'mask_ious', 'maskness',
                        'masks'):
                assert torch.equal(a[key], b[key]), key
