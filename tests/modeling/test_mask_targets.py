"""StandardROIHeads' mask targets: cropped where the mask pooler samples features.

With ROIAlignV2 (aligned=True) a target pixel is the bilinear sample of the ground-truth mask at the
continuous image points the pooler would sample for that bin (pixel k covering [k, k+1), sampled at
its centre k + 0.5): the formula is written out here. With ROIAlign the heads reproduce torchvision's
RoIHeads exactly (same losses on the same inputs)."""
import copy
import math

import pytest
import torch

from gn_det.config import get_cfg
from gn_det.modeling import build_model
from gn_det.modeling.standard_roi_heads import mask_targets
from torchvision.models.detection.roi_heads import RoIHeads


def _bilinear(img, u, v):
    """Value at continuous image point (u = x, v = y), pixel k's centre at k + 0.5, zero outside."""
    x, y = u - 0.5, v - 0.5
    h, w = img.shape
    if y < -1 or y > h or x < -1 or x > w:
        return 0.0
    y, x = max(y, 0.0), max(x, 0.0)
    y0, x0 = int(math.floor(y)), int(math.floor(x))
    y0, x0 = min(y0, h - 1), min(x0, w - 1)
    y1, x1 = min(y0 + 1, h - 1), min(x0 + 1, w - 1)
    if y0 >= h - 1:
        y = float(y0)
    if x0 >= w - 1:
        x = float(x0)
    ly, lx = y - y0, x - x0
    return ((1 - ly) * (1 - lx) * img[y0, x0] + (1 - ly) * lx * img[y0, x1]
            + ly * (1 - lx) * img[y1, x0] + ly * lx * img[y1, x1])


def _roi_align_v2(img, box, size):
    """detectron2's ROIAlignV2 of one box at scale 1, adaptive sampling: the mean of the bilinear samples."""
    x1, y1, x2, y2 = box
    bw, bh = (x2 - x1) / size, (y2 - y1) / size
    gw, gh = math.ceil((x2 - x1) / size), math.ceil((y2 - y1) / size)
    out = torch.zeros(size, size, dtype=torch.float64)
    for i in range(size):
        for j in range(size):
            samples = [_bilinear(img, x1 + j * bw + (sx + 0.5) * bw / gw, y1 + i * bh + (sy + 0.5) * bh / gh)
                       for sy in range(gh) for sx in range(gw)]
            out[i, j] = sum(samples) / len(samples)
    return out


@pytest.mark.parametrize("seed", range(3))
def test_aligned_targets_follow_the_roialignv2_formula(seed):
    g = torch.Generator().manual_seed(seed)
    masks = (torch.rand(2, 20, 24, generator=g) > 0.5).to(torch.uint8)
    boxes = torch.tensor([[2.3, 1.7, 15.9, 12.4], [5.0, 4.5, 21.2, 18.8]], dtype=torch.float64)
    idx = torch.tensor([1, 0])
    got = mask_targets(masks, boxes, idx, 6, aligned=True)
    for r in range(2):
        expected = _roi_align_v2(masks[idx[r]].double(), boxes[r].tolist(), 6)
        torch.testing.assert_close(got[r], expected, rtol=1e-9, atol=1e-9)
    # torchvision's aligned=False crop is half a pixel off these targets
    assert (mask_targets(masks, boxes, idx, 6, aligned=False) - got).abs().max() > 0.05


def _tiny_cfg(pooler):
    cfg = get_cfg()
    cfg.merge_from_file("configs/tiny/mask_rcnn_R_18_FPN_gn.yaml")
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.ROI_MASK_HEAD.POOLER_TYPE", pooler,
                         "MODEL.ROI_BOX_HEAD.POOLER_TYPE", pooler])
    return cfg


def _batch():
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(3, 96, 128, generator=g) * 255 for _ in range(2)]
    targets = []
    for _ in range(2):
        masks = torch.zeros(2, 96, 128, dtype=torch.uint8)
        masks[0, 10:50, 20:70] = 1
        masks[1, 40:90, 60:120] = 1
        targets.append({"boxes": torch.tensor([[20., 10., 70., 50.], [60., 40., 120., 90.]]),
                        "labels": torch.tensor([1, 3]), "masks": masks})
    return images, targets


@pytest.mark.parametrize("pooler, aligned", [("ROIAlignV2", True), ("ROIAlign", False)])
def test_heads_crop_targets_with_the_mask_poolers_alignment(pooler, aligned):
    model = build_model(_tiny_cfg(pooler)).train()
    assert model.roi_heads.mask_targets_aligned is aligned


def test_with_roialign_the_heads_equal_torchvisions():
    """ROIAlign (torchvision's convention): every loss and every eval output as torchvision's RoIHeads."""
    torch.manual_seed(0)
    model = build_model(_tiny_cfg("ROIAlign")).train()
    images, targets = _batch()
    reference = copy.deepcopy(model)
    reference.roi_heads.__class__ = RoIHeads  # same modules and state, torchvision's forward
    torch.manual_seed(1)
    ours = model(images, [dict(t) for t in targets])
    torch.manual_seed(1)
    theirs = reference(images, [dict(t) for t in targets])
    assert ours.keys() == theirs.keys()
    for k in ours:
        torch.testing.assert_close(ours[k], theirs[k], rtol=1e-6, atol=1e-7, msg=k)
    model.eval(), reference.eval()
    with torch.no_grad():
        a, b = model(images), reference(images)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for k in x:
            torch.testing.assert_close(x[k], y[k], msg=k)


def test_no_positive_roi_still_connects_the_mask_loss():
    model = build_model(_tiny_cfg("ROIAlignV2")).train()
    images, targets = _batch()
    for t in targets:  # boxes far from any proposal's reach still match some; make none positive
        t["boxes"] = torch.zeros((0, 4))
        t["labels"] = torch.zeros((0,), dtype=torch.int64)
        t["masks"] = torch.zeros((0, 96, 128), dtype=torch.uint8)
    losses = model(images, targets)
    assert losses["loss_mask"].item() == 0 and losses["loss_mask"].requires_grad


def test_loss_mask_is_the_bce_of_the_aligned_targets():
    """loss_mask equals a BCE computed here, in float64, from targets cropped by this file's RoIAlignV2 formula
    at the positive RoIs the heads sampled, against the logits of each RoI's ground-truth class."""
    torch.manual_seed(0)
    model = build_model(_tiny_cfg("ROIAlignV2")).train()
    heads = model.roi_heads
    seen = {}
    select = heads.select_training_samples

    def recording_select(proposals, targets):
        seen["samples"] = select(proposals, targets)
        return seen["samples"]

    heads.select_training_samples = recording_select
    heads.register_forward_pre_hook(lambda m, args: seen.__setitem__("targets", args[3]))
    heads.mask_predictor.register_forward_hook(lambda m, args, out: seen.__setitem__("logits", out.detach()))
    images, targets = _batch()
    losses = model(images, [dict(t) for t in targets])
    proposals, matched_idxs, labels, _ = seen["samples"]
    logits, size = seen["logits"].double(), seen["logits"].shape[-1]
    terms, k = [], 0
    for props, idxs, labs, tgt in zip(proposals, matched_idxs, labels, seen["targets"]):
        for i in torch.where(labs > 0)[0].tolist():
            gt = int(idxs[i])
            target = _roi_align_v2(tgt["masks"][gt].double(), props[i].double().tolist(), size)
            x = logits[k, int(tgt["labels"][gt])]
            terms.append(-(target * torch.nn.functional.logsigmoid(x) + (1 - target) * torch.nn.functional.logsigmoid(-x)))
            k += 1
    assert k == logits.shape[0] and k >= 4  # every positive RoI, and some
    expected = torch.stack(terms).mean()
    assert 0.1 < float(expected) < 5.0
    torch.testing.assert_close(losses["loss_mask"].double(), expected, rtol=1e-5, atol=1e-6)
