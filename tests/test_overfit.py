"""The point of the method: after a short CPU training run, the predicted
MaskIoU tracks the true IoU of the predicted masks."""
import numpy as np
import torch
from helpers import build_model, preprocess, synthetic_batch, tiny_model_cfg
from mmdet.structures.bbox import bbox_overlaps

ITERS = 150
NUM_CLASSES = 3
MATCH_IOU = 0.5  # detections whose box matches a same-class GT


def mask_iou(pred, gt):
    inter = (pred & gt).sum((-1, -2)).float()
    union = (pred | gt).sum((-1, -2)).float()
    return torch.where(union > 0, inter / union.clamp(min=1), 0 * union)


def matched_ious(pred, gt):
    """Predicted and true MaskIoU of detections matched to a GT box."""
    overlaps = bbox_overlaps(pred.bboxes, gt.bboxes)
    overlaps[pred.labels[:, None] != gt.labels[None]] = 0
    best, idx = overlaps.max(1)
    keep = best >= MATCH_IOU
    gt_masks = torch.from_numpy(gt.masks.masks).bool()[idx[keep]]
    true = mask_iou(pred.masks[keep].bool(), gt_masks)
    return pred.mask_ious[keep], true


def test_predicted_mask_iou_correlates_with_true_iou():
    torch.manual_seed(0)
    cfg = tiny_model_cfg(NUM_CLASSES)
    cfg.model.test_cfg.rcnn.update(score_thr=0.0)
    model = build_model(cfg, seed=0).train()
    optim = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    batches = [synthetic_batch(4, size=96, num_instances=[2, 3, 3, 4],
                               seed=s) for s in range(2)]
    # scored on the training images and on as many unseen ones
    held_out = [synthetic_batch(4, size=96, num_instances=[2, 3, 3, 4],
                                seed=s) for s in range(2, 4)]
    for it in range(ITERS):
        losses = model(**preprocess(model, batches[it % 2], training=True),
                       mode='loss')
        loss, _ = model.parse_losses(losses)
        optim.zero_grad()
        loss.backward()
        optim.step()
    model.eval()
    preds, trues = [], []
    with torch.no_grad():
        for batch in batches + held_out:
            data = preprocess(model, batch, training=False)
            for res, gt in zip(model(**data, mode='predict'),
                               batch['data_samples']):
                p, t = matched_ious(res.pred_instances, gt.gt_instances)
                preds.append(p)
                trues.append(t)
    pred, true = torch.cat(preds).numpy(), torch.cat(trues).numpy()
    assert len(pred) >= 30
    assert true.std() > 0.05  # a spread of mask quality to rank
    pearson = np.corrcoef(pred, true)[0, 1]
    print(f'{len(pred)} matched detections, Pearson r = {pearson:.3f}')
    assert pearson > 0.5
