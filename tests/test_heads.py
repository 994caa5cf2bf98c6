"""MaskIoUHead and MaskScoringRoIHead: parity with mmdet, the loss against
brute-force references, and the prediction contract."""
import copy

import numpy as np
import pytest
import torch
from helpers import (REPO, build_model, predict, preprocess, synthetic_batch,
                     tiny_model_cfg, train_step_losses)
from mmdet.registry import MODELS
from mmdet.structures import DetDataSample
from mmdet.structures.mask import BitmapMasks
from mmengine.config import Config
from mmengine.structures import InstanceData

from ms_rcnn_mm.models import ChannelsLastFCNMaskHead, MaskScoringRoIHead
from ms_rcnn_mm.models.mask_iou_head import IOU_PRIOR, MaskIoUHead

NUM_CLASSES = 3
DEMO_CONFIG = REPO / 'configs' / 'demo' / 'ms-rcnn_r18-w32_fpn_synthetic.py'


def mmdet_ms_rcnn_cfg(cfg):
    """The same tiny model with mmdet 3.3.0's built-in MS R-CNN classes."""
    cfg = copy.deepcopy(cfg)
    cfg.model.type = 'MaskScoringRCNN'
    cfg.model.roi_head.type = 'MaskScoringRoIHead'
    cfg.model.roi_head.mask_iou_head.type = 'MaskIoUHead'
    return cfg


def mask_rcnn_cfg(cfg):
    """The same tiny model as a plain Mask R-CNN."""
    cfg = copy.deepcopy(cfg)
    cfg.model.type = 'MaskRCNN'
    cfg.model.roi_head.type = 'StandardRoIHead'
    cfg.model.roi_head.pop('mask_iou_head')
    return cfg


def predicting_cfg(**rcnn):
    cfg = tiny_model_cfg(NUM_CLASSES)
    # keep every detection of an untrained model: a non-trivial contract
    cfg.model.test_cfg.rcnn.update(dict(score_thr=0.0), **rcnn)
    return cfg


@pytest.fixture(scope='module')
def batch():
    return synthetic_batch(num_images=2, size=96, num_instances=[3, 4])


def test_loads_mmdet_ms_rcnn_state_dict_and_rescores_like_it(batch):
    """mmdet's MS R-CNN ``state_dict`` loads strictly; with it, our boxes are
    mmdet's, our mask scores are mmdet's rescored ``scores`` (where mmdet's
    unclamped IoU stays in [0, 1]), and ``rescore_boxes=True`` writes them
    into ``scores`` as mmdet does.

    Catches renamed or reshaped parameters (mmdet checkpoints would not
    load) and a mask score or legacy switch that differs from mmdet's."""
    cfg = predicting_cfg()
    theirs = build_model(mmdet_ms_rcnn_cfg(cfg), seed=1).eval()
    ours = build_model(cfg, seed=2).eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    mine, ref = predict(ours, batch), predict(theirs, batch)
    ours.roi_head.rescore_boxes = True
    legacy = predict(ours, batch)
    for m, r, leg in zip(mine, ref, legacy):
        assert len(m) == len(r) > 0
        torch.testing.assert_close(m.bboxes, r.bboxes)
        # mmdet overwrites scores with cls * MaskIoU: our mask_scores (the
        # IoU clamped to [0, 1] first) and the legacy switch reproduce it
        inside = (r.scores <= m.scores + 1e-6) & (r.scores >= 0)
        torch.testing.assert_close(m.mask_scores[inside], r.scores[inside])
        torch.testing.assert_close(leg.scores, m.mask_scores)


def test_prediction_contract_against_plain_mask_rcnn(batch):
    """The contract of ``pred_instances``: boxes, labels, scores and masks
    are plain Mask R-CNN's with the same weights, ``mask_ious`` lie in
    [0, 1] and ``mask_scores == scores * mask_ious``.

    Catches rescoring the boxes, a MaskIoU that is not clamped, and a mask
    score that is not the product."""
    cfg = predicting_cfg()
    ours = build_model(cfg, seed=3).eval()
    plain = build_model(mask_rcnn_cfg(cfg), seed=4).eval()
    missing, unexpected = plain.load_state_dict(ours.state_dict(),
                                                strict=False)
    assert not missing
    assert unexpected and all(k.startswith('roi_head.mask_iou_head.')
                              for k in unexpected)
    for m, r in zip(predict(ours, batch), predict(plain, batch)):
        assert len(m) > 0
        assert torch.equal(m.bboxes, r.bboxes)
        assert torch.equal(m.labels, r.labels)
        assert torch.equal(m.scores, r.scores)
        assert torch.equal(m.masks, r.masks)
        assert m.mask_ious.shape == m.scores.shape
        assert ((m.mask_ious >= 0) & (m.mask_ious <= 1)).all()
        torch.testing.assert_close(m.mask_scores, m.scores * m.mask_ious)


def test_tensor_forward_keeps_every_roi(batch):
    """The tensor-mode forward scores every RoI it is given, one MaskIoU
    per class.

    Catches truncating the RoIs to 100 (as mmdet 3.3.0 does)."""
    model = build_model(predicting_cfg(), seed=5).eval()
    data = preprocess(model, batch, training=False)
    with torch.no_grad():
        (cls_score, bbox_pred, mask_preds, mask_ious), = model(
            **data, mode='tensor')
    num_rois = cls_score.size(0)
    assert num_rois > 100  # mmdet 3.3.0 truncates this output to 100
    assert bbox_pred.size(0) == mask_preds.size(0) == num_rois
    assert mask_ious.shape == (num_rois, NUM_CLASSES)


def test_rescale_changes_masks_not_scores(batch):
    """``rescale=True`` pastes masks at the original size and scales the
    boxes; the predicted MaskIoU is the same.

    Catches a MaskIoU computed from the pasted (rescaled) masks."""
    model = build_model(predicting_cfg(), seed=6).eval()
    scaled = copy.deepcopy(batch)
    for sample in scaled['data_samples']:
        sample.set_metainfo(dict(ori_shape=(48, 48), scale_factor=(2., 2.)))
    data = preprocess(model, scaled, training=False)
    with torch.no_grad():
        x = model.extract_feat(data['inputs'])
        samples = data['data_samples']
        rpn = model.rpn_head.predict(x, samples, rescale=False)
        out = {}
        for rescale in (False, True):
            out[rescale] = model.roi_head.predict(x, copy.deepcopy(rpn),
                                                  samples, rescale=rescale)
    for small, big in zip(out[True], out[False]):
        assert small.masks.shape[-2:] == (48, 48)
        assert big.masks.shape[-2:] == (96, 96)
        torch.testing.assert_close(small.mask_ious, big.mask_ious)
        torch.testing.assert_close(small.bboxes * 2, big.bboxes)


def test_no_detection_gives_empty_fields(batch):
    """With no detection every field, ``mask_ious`` and ``mask_scores``
    included, is there with length 0.

    Catches fields missing from empty results (the metric and the
    inferencer read them)."""
    model = build_model(predicting_cfg(score_thr=1.1), seed=7).eval()
    for pred in predict(model, batch):
        assert len(pred) == 0
        for key in ('bboxes', 'scores', 'labels', 'masks', 'mask_ious',
                    'mask_scores'):
            assert pred[key].shape[0] == 0, key


def test_loss_reaches_the_mask_iou_head(batch):
    """``loss_mask_iou`` is finite and positive on a real batch, and its
    gradient reaches every parameter of the MaskIoU head.

    Catches a head left out of the loss or detached from it."""
    model = build_model(tiny_model_cfg(NUM_CLASSES), seed=8).train()
    losses = train_step_losses(model, batch)
    assert torch.isfinite(losses['loss_mask_iou'])
    assert losses['loss_mask_iou'] > 0
    losses['loss_mask_iou'].backward()
    head = model.roi_head.mask_iou_head
    for name, param in head.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


#: one 128x128 image, two instances of different classes: (label, ground-
#: truth rectangle, the one proposal given for it) as (x1, y1, x2, y2); each
#: proposal holds its rectangle, at box IoU 0.51 and 0.73 (positives)
CHANNEL_CASE = ((1, (16, 16, 56, 56), (8, 8, 64, 64)),
                (2, (68, 68, 116, 116), (64, 64, 120, 120)))
CHANNEL_IMAGE = 128
#: mask logits of a channel predicting its whole RoI, or nothing
FULL, EMPTY = 10.0, -10.0


def box_mask(box, size=CHANNEL_IMAGE):
    """``(size, size)`` bools, True inside ``box`` (x1, y1, x2, y2)."""
    yy, xx = np.mgrid[:size, :size]
    x1, y1, x2, y2 = box
    return (xx >= x1) & (xx < x2) & (yy >= y1) & (yy < y2)


def true_mask_iou(gt_box, proposal):
    """Brute force: IoU, counted in the image, of the rectangle
    ``gt_box`` with a predicted mask that fills ``proposal``."""
    pred, gt = box_mask(proposal), box_mask(gt_box)
    return (pred & gt).sum() / (pred | gt).sum()


def mask_iou_loss(mask_logits, iou_preds, loss_target_thr=0.0):
    """``loss_mask_iou`` of the RoI head on :data:`CHANNEL_CASE`, with a
    mask head whose class ``c`` predicts the constant logit
    ``mask_logits[c]`` and a MaskIoU head whose class ``c`` predicts
    ``iou_preds[c]`` (zero weights, those biases), whatever the input."""
    cfg = tiny_model_cfg(NUM_CLASSES)
    cfg.model.train_cfg.rcnn.sampler.add_gt_as_proposals = False
    cfg.model.roi_head.mask_iou_head.update(
        loss_target_thr=loss_target_thr,
        loss_iou=dict(type='MSELoss', loss_weight=0.5))
    model = build_model(cfg, seed=12).train()
    roi = model.roi_head
    with torch.no_grad():
        for layer, bias in ((roi.mask_head.conv_logits, mask_logits),
                            (roi.mask_iou_head.fc_mask_iou, iou_preds)):
            layer.weight.zero_()
            layer.bias.copy_(torch.tensor(bias))
    labels, gt_boxes, proposals = zip(*CHANNEL_CASE)
    gt = InstanceData(
        bboxes=torch.tensor(gt_boxes, dtype=torch.float32),
        labels=torch.tensor(labels),
        masks=BitmapMasks(np.stack([box_mask(b) for b in gt_boxes]).astype(
            np.uint8), CHANNEL_IMAGE, CHANNEL_IMAGE))
    sample = DetDataSample(metainfo=dict(
        img_shape=(CHANNEL_IMAGE, CHANNEL_IMAGE),
        ori_shape=(CHANNEL_IMAGE, CHANNEL_IMAGE), scale_factor=(1.0, 1.0)))
    sample.gt_instances = gt
    image = torch.randint(0, 256, (3, CHANNEL_IMAGE, CHANNEL_IMAGE),
                          generator=torch.Generator().manual_seed(0),
                          dtype=torch.uint8)
    data = preprocess(model, dict(inputs=[image], data_samples=[sample]),
                      training=True)
    rpn_results = [InstanceData(
        bboxes=torch.tensor(proposals, dtype=torch.float32))]
    losses = roi.loss(model.extract_feat(data['inputs']), rpn_results,
                      data['data_samples'])
    return losses['loss_mask_iou'].item()


def reference_loss(full_classes, iou_preds, loss_target_thr=0.0):
    """The MaskIoU loss of :func:`mask_iou_loss` by brute force: a RoI's
    target is the true IoU of its whole box with its rectangle where the
    mask channel of its class is full, 0 where it is empty; the loss is
    0.5 x the mean squared error over the RoIs whose target exceeds the
    threshold (all with ``None``)."""
    errors = []
    for label, gt_box, proposal in CHANNEL_CASE:
        target = true_mask_iou(gt_box, proposal) \
            if label in full_classes else 0.0
        if loss_target_thr is None or target > loss_target_thr:
            errors.append((iou_preds[label] - target)**2)
    return 0.5 * float(np.mean(errors)) if errors else 0.0


def test_mask_iou_targets_come_from_the_gt_class_mask_channel():
    """Only the mask channels of classes 0 and 1 predict anything, so the
    class-1 instance has a MaskIoU target (its true IoU, 0.51) and the
    class-2 one has 0 and leaves the loss.

    Catches MaskIoU targets computed from another mask channel than the
    ground-truth class's: a fixed channel, the predicted class, or an
    off-by-one label."""
    iou_preds = (0.3, 0.3, 0.3)
    loss = mask_iou_loss((FULL, FULL, EMPTY), iou_preds)
    want = reference_loss({0, 1}, iou_preds)
    assert want > 0
    assert loss == pytest.approx(want, rel=1e-4)


def test_mask_iou_loss_reads_the_gt_class_iou_channel():
    """Every mask channel predicts the whole RoI; the MaskIoU head predicts
    0, 0.2 and 0.9 for classes 0, 1 and 2, so the loss holds
    (0.2 - 0.51)^2 and (0.9 - 0.73)^2.

    Catches a loss on another MaskIoU channel than the ground-truth
    class's (the predicted class, a fixed channel, an off-by-one label)."""
    iou_preds = (0.0, 0.2, 0.9)
    loss = mask_iou_loss((FULL, FULL, FULL), iou_preds)
    assert loss == pytest.approx(reference_loss({0, 1, 2}, iou_preds),
                                 rel=1e-4)


@pytest.mark.parametrize('thr', [None, 0.6])
def test_loss_target_threshold_selects_rois(thr):
    """``loss_target_thr=0.6`` keeps the RoI of target 0.73 and drops the
    one of 0.51; ``None`` keeps both (the 0.0 default is in the tests
    above).

    Catches a threshold that is ignored, or applied to the prediction
    instead of the target."""
    iou_preds = (0.0, 0.2, 0.9)
    loss = mask_iou_loss((FULL, FULL, FULL), iou_preds, thr)
    assert loss == pytest.approx(
        reference_loss({0, 1, 2}, iou_preds, thr), rel=1e-4)


def test_predicted_mask_iou_is_that_of_the_predicted_class(batch):
    """A MaskIoU head predicting -0.5, 0.5 and 1.5 for classes 0, 1 and 2:
    each detection's ``mask_ious`` is its label's, clamped to [0, 1].

    Catches reading another class's channel at test time (a fixed channel,
    an off-by-one label) and a missing clamp."""
    model = build_model(predicting_cfg(), seed=13).eval()
    head = model.roi_head.mask_iou_head.fc_mask_iou
    with torch.no_grad():
        head.weight.zero_()
        head.bias.copy_(torch.tensor([-0.5, 0.5, 1.5]))
    for pred in predict(model, batch):
        assert set(pred.labels.tolist()) == {0, 1, 2}
        want = torch.tensor([0.0, 0.5, 1.0])[pred.labels]
        assert torch.equal(pred.mask_ious, want)


def test_empty_ground_truth_keeps_the_graph():
    """Images without ground truth give ``loss_mask_iou == 0`` that still
    carries a graph, alone and beside an image with instances.

    Catches a loss that breaks ``backward`` (or DDP) on empty batches."""
    model = build_model(tiny_model_cfg(NUM_CLASSES), seed=10).train()
    empty = synthetic_batch(num_images=2, size=96, num_instances=[0, 0])
    losses = train_step_losses(model, empty)
    assert losses['loss_mask_iou'].item() == 0
    assert losses['loss_mask_iou'].requires_grad
    mixed = synthetic_batch(num_images=2, size=96, num_instances=[0, 3])
    losses = train_step_losses(model, mixed)
    total, _ = model.parse_losses(losses)
    assert torch.isfinite(total)
    total.backward()


@pytest.mark.parametrize('variant', ['class_agnostic', 'shared_extractor'])
def test_head_variants_train_and_predict(variant, batch):
    """A class-agnostic mask head and a shared RoI extractor train and
    predict.

    Catches a MaskIoU branch that assumes per-class masks or a separate
    mask extractor."""
    cfg = predicting_cfg()
    roi = cfg.model.roi_head
    if variant == 'class_agnostic':
        roi.mask_head.class_agnostic = True
    else:
        # no mask extractor: the mask head reads the bbox RoI features,
        # 14x14 here as the MaskIoU head needs
        roi.mask_roi_extractor = None
        roi.bbox_roi_extractor.roi_layer.output_size = 14
        roi.bbox_head.roi_feat_size = 14
    model = build_model(cfg, seed=11).train()
    assert isinstance(model.roi_head, MaskScoringRoIHead)
    assert model.roi_head.share_roi_extractor == (variant != 'class_agnostic')
    losses = train_step_losses(model, batch)
    assert torch.isfinite(losses['loss_mask_iou'])
    pred = predict(model.eval(), batch)[0]
    assert len(pred) > 0 and pred.mask_ious.shape == pred.scores.shape


def test_mmdet_mask_iou_head_type_is_rejected():
    """mmdet's ``MaskIoUHead`` inside our RoI head is an error that names
    the type to write.

    Catches silently training with mmdet's targets."""
    cfg = tiny_model_cfg(NUM_CLASSES)
    cfg.model.roi_head.mask_iou_head.type = 'MaskIoUHead'
    with pytest.raises(TypeError, match="type='ms_rcnn_mm.MaskIoUHead'"):
        build_model(cfg)


@pytest.mark.parametrize('iou_prior', [None, 0.0, 0.4])
def test_untrained_head_predicts_the_iou_prior(iou_prior):
    """Before training the head predicts about ``iou_prior`` (0.75 unset),
    its output bias exactly; an explicit ``init_cfg`` wins.

    Catches mmdet's zero bias left as the default, the prior put on
    another layer than the output one, or ignored when set."""
    args = dict(in_channels=8, conv_out_channels=8, fc_out_channels=16,
                num_classes=NUM_CLASSES)
    if iou_prior is not None:
        args['iou_prior'] = iou_prior
    want = IOU_PRIOR if iou_prior is None else iou_prior
    torch.manual_seed(0)
    head = MaskIoUHead(**args)
    head.init_weights()
    assert IOU_PRIOR == 0.75
    assert torch.equal(head.fc_mask_iou.bias,
                       torch.full((NUM_CLASSES, ), float(want)))
    pred = head(torch.rand(5, 8, 14, 14), torch.randn(5, 28, 28))
    assert (pred - want).abs().max() < 0.05
    explicit = MaskIoUHead(init_cfg=dict(
        type='Constant', val=0.0, bias=0.2, layer='Linear'), **args)
    explicit.init_weights()
    assert torch.equal(explicit.fc_mask_iou.bias,
                       torch.full((NUM_CLASSES, ), 0.2))


def test_channels_last_mask_head_computes_mmdet_fcn_mask_head():
    """The demo configs' mask head is mmdet's ``FCNMaskHead`` channels-last
    on the CPU: with the same weights, the same logits and gradients up to
    float rounding, a contiguous output and state dicts that load both ways.

    Catches a layout change that moves values instead of strides (logits
    differ), the conversion dropped (the first convolution sees a
    contiguous input), a channels-last output left to callers that
    ``view`` it, or a renamed parameter (strict loading fails)."""
    args = dict(num_convs=4, in_channels=16, conv_out_channels=16,
                num_classes=NUM_CLASSES)
    torch.manual_seed(0)
    reference = MODELS.build(dict(type='FCNMaskHead', **args))
    reference.init_weights()
    head = ChannelsLastFCNMaskHead(**args)
    head.load_state_dict(reference.state_dict())
    reference.load_state_dict(head.state_dict())
    layouts = []
    head.convs[0].register_forward_pre_hook(lambda _, inputs: layouts.append(
        inputs[0].is_contiguous(memory_format=torch.channels_last)))
    feats = torch.randn(6, 16, 14, 14)
    grad = torch.randn(6, NUM_CLASSES, 28, 28)
    outputs, input_grads = [], []
    for module in (reference, head):
        x = feats.clone().requires_grad_()
        out = module(x)
        (out * grad).sum().backward()
        outputs.append(out)
        input_grads.append(x.grad)
    assert layouts == [True]
    assert outputs[1].shape == (6, NUM_CLASSES, 28, 28)
    assert outputs[1].is_contiguous()
    assert torch.allclose(outputs[1], outputs[0], rtol=1e-4, atol=1e-5)
    assert torch.allclose(input_grads[1], input_grads[0], rtol=1e-4,
                          atol=1e-5)
    weight_grads = [m.convs[0].conv.weight.grad for m in (reference, head)]
    assert torch.allclose(weight_grads[1], weight_grads[0], rtol=1e-4,
                          atol=1e-5)
    demo = Config.fromfile(str(DEMO_CONFIG)).model.roi_head.mask_head
    assert demo.type == 'ms_rcnn_mm.ChannelsLastFCNMaskHead'
