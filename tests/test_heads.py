"""MaskIoUHead and MaskScoringRoIHead: parity with mmdet, the loss path and
the prediction contract."""
import copy

import pytest
import torch
from helpers import (build_model, predict, preprocess, synthetic_batch,
                     tiny_model_cfg, train_step_losses)
from mmdet.models.roi_heads.mask_heads import MaskIoUHead as MMDetMaskIoUHead

from ms_rcnn_mm.models import MaskIoUHead, MaskScoringRoIHead

NUM_CLASSES = 3


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


def test_state_dict_and_forward_match_mmdet():
    torch.manual_seed(0)
    theirs = MMDetMaskIoUHead(num_classes=7)
    theirs.init_weights()
    ours = MaskIoUHead(num_classes=7)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {
        k: v.shape for k, v in theirs.state_dict().items()}
    ours.load_state_dict(theirs.state_dict(), strict=True)
    feats = torch.randn(5, 256, 14, 14)
    masks = torch.randn(5, 28, 28)
    assert torch.equal(ours(feats, masks), theirs(feats, masks))


def test_loads_mmdet_ms_rcnn_state_dict_and_rescores_like_it(batch):
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
        torch.testing.assert_close(m.mask_scores,
                                   m.scores * m.mask_ious)
        inside = (r.scores <= m.scores + 1e-6) & (r.scores >= 0)
        torch.testing.assert_close(m.mask_scores[inside], r.scores[inside])
        torch.testing.assert_close(leg.scores, m.mask_scores)


def test_prediction_contract_against_plain_mask_rcnn(batch):
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
    model = build_model(predicting_cfg(score_thr=1.1), seed=7).eval()
    for pred in predict(model, batch):
        assert len(pred) == 0
        for key in ('bboxes', 'scores', 'labels', 'masks', 'mask_ious',
                    'mask_scores'):
            assert pred[key].shape[0] == 0, key


def test_loss_reaches_the_mask_iou_head(batch):
    model = build_model(tiny_model_cfg(NUM_CLASSES), seed=8).train()
    losses = train_step_losses(model, batch)
    assert torch.isfinite(losses['loss_mask_iou'])
    assert losses['loss_mask_iou'] > 0
    losses['loss_mask_iou'].backward()
    head = model.roi_head.mask_iou_head
    for name, param in head.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def losses_and_mask_iou_inputs(model, batch, monkeypatch):
    """Losses of one step, and what the MaskIoU loss saw."""
    head = model.roi_head.mask_iou_head
    seen = {}
    original = head.loss_and_target

    def spy(pred, *args):
        out = original(pred, *args)
        seen.update(pred=pred.detach(), **out)
        return out

    monkeypatch.setattr(head, 'loss_and_target', spy)
    return train_step_losses(model, batch), seen


def test_loss_equals_the_mse_of_its_targets(batch, monkeypatch):
    model = build_model(tiny_model_cfg(NUM_CLASSES), seed=9).train()
    losses, seen = losses_and_mask_iou_inputs(model, batch, monkeypatch)
    targets = seen['mask_iou_targets']
    selected = targets > 0
    assert 0 < selected.sum() <= targets.numel()
    want = 0.5 * ((seen['pred'][selected] - targets[selected])**2).mean()
    torch.testing.assert_close(losses['loss_mask_iou'].detach(), want)


@pytest.mark.parametrize('thr', [None, 0.5])
def test_loss_target_threshold_selects_rois(thr, batch, monkeypatch):
    cfg = tiny_model_cfg(NUM_CLASSES)
    cfg.model.roi_head.mask_iou_head.loss_target_thr = thr
    model = build_model(cfg, seed=9).train()
    losses, seen = losses_and_mask_iou_inputs(model, batch, monkeypatch)
    targets = seen['mask_iou_targets']
    selected = torch.ones_like(targets, dtype=torch.bool) if thr is None \
        else targets > thr
    assert 0 < selected.sum() < (targets > 0).sum() or thr is None
    want = 0.5 * ((seen['pred'][selected] - targets[selected])**2).mean()
    torch.testing.assert_close(losses['loss_mask_iou'].detach(), want)


def test_empty_ground_truth_keeps_the_graph():
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
    assert len(pred) > 0
    torch.testing.assert_close(pred.mask_scores, pred.scores * pred.mask_ious)


def test_mmdet_mask_iou_head_type_is_rejected():
    cfg = tiny_model_cfg(NUM_CLASSES)
    cfg.model.roi_head.mask_iou_head.type = 'MaskIoUHead'
    with pytest.raises(TypeError, match="type='ms_rcnn_mm.MaskIoUHead'"):
        build_model(cfg)
