"""The detector learns: one fixed batch of 2 shapes images, ITERS Adam iterations of the tiny GN Mask R-CNN
(tests/engine/tiny_mask_rcnn.yaml) from scratch on CPU. The training loss (mean of the last 3 iterations
against the first) and each of the classification, box and mask losses fall by at least 40%, and in eval
mode (on the fixed proposals below) the top detection on each training image overlaps a shape (IoU >= 0.5)
and has its class.

The RoI-head losses are compared on the same RoIs before and after training (fixed proposals, fixed
sampling seed): the losses of a training step depend on how many positive proposals the RPN finds, which
grows as it learns (the box loss of a step rose while the model improved). A from-scratch RPN finds few
positives in ITERS iterations, so during training the heads also get those fixed proposals (ground-truth
boxes shifted; the RPN's own proposals and losses are kept). Measured figures are printed (``pytest -s``)
and written to ``$GN_DET_LEARN_REPORT`` when set. About 10 s on 2 idle cores."""
import json
import os

import torch
from torchvision.ops import box_iou

from gn_det.config import get_cfg
from gn_det.data import build_detection_train_loader, generate_shapes_dataset, register_coco_instances
from gn_det.modeling import build_model

HERE = os.path.dirname(os.path.abspath(__file__))
CONFIG = os.path.join(HERE, "tiny_mask_rcnn.yaml")
ITERS = 50
HEAD_LOSSES = ("loss_classifier", "loss_box_reg", "loss_mask")
HEADS_LR, LR = 4e-3, 1e-3  # Adam: RoI heads, the rest
MIN_DROP = 0.40


def _fixed_batch(tmp_path):
    root = tmp_path / "shapes"
    generate_shapes_dataset(str(root), num_train=2, num_val=1, size=64, seed=3)
    register_coco_instances("learn_train_fixed", {}, root / "annotations" / "instances_train.json", root / "train")
    cfg = get_cfg()
    cfg.merge_from_file(CONFIG)
    cfg.merge_from_list(["DATASETS.TRAIN", ("learn_train_fixed",), "INPUT.RANDOM_FLIP", "none",
                         "MODEL.DEVICE", "cpu"])
    batch = next(iter(build_detection_train_loader(cfg, rank=0, world_size=1)))
    return cfg, [img for img, _ in batch], [t for _, t in batch]


def _fixed_proposals(model, images, targets):
    """Deterministic proposals for the RoI heads, in the model's input coordinates (after its transform): each
    ground-truth box shifted right and down by 4..20% of its width and 2..10% of its height (positives: IoU
    above 0.5), and by +-40% (negatives), plus 16 seeded random boxes per image."""
    g = torch.Generator().manual_seed(7)
    image_list, resized = model.transform([i.clone() for i in images], [dict(t) for t in targets])
    out = []
    for t, (h, w) in zip(resized, image_list.image_sizes):
        gt = t["boxes"]
        size = (gt[:, 2:] - gt[:, :2]).repeat(1, 2)
        boxes = [gt + size * torch.tensor([f, f / 2, f, f / 2]) for f in (0.04, 0.08, 0.12, 0.16, 0.2, 0.4, -0.4)]
        xy = torch.rand(16, 2, generator=g) * torch.tensor([w * 0.7, h * 0.7])
        wh = 8 + torch.rand(16, 2, generator=g) * torch.tensor([w * 0.3, h * 0.3])
        boxes.append(torch.cat([xy, xy + wh], 1))
        all_boxes = torch.cat(boxes)
        all_boxes[:, 0::2] = all_boxes[:, 0::2].clamp(0, w)
        all_boxes[:, 1::2] = all_boxes[:, 1::2].clamp(0, h)
        out.append(all_boxes)
    return out


def _head_losses(model, images, targets, proposals):
    """The RoI heads' losses on fixed proposals and a fixed sampling seed, in training mode, no update:
    before and after training they score the same RoIs, so the change is what the heads learned (the
    training losses themselves move with the number of positive proposals the RPN finds)."""
    rpn_forward = model.rpn.forward
    model.rpn.forward = lambda *args, **kwargs: ([p.clone() for p in proposals], {})
    try:
        torch.manual_seed(11)
        with torch.no_grad():
            return {k: float(v) for k, v in model(images, [dict(t) for t in targets]).items()}
    finally:
        model.rpn.forward = rpn_forward


def test_tiny_mask_rcnn_learns_a_fixed_batch(tmp_path):
    cfg, images, targets = _fixed_batch(tmp_path)
    assert len(images) == 2 and all(len(t["labels"]) > 0 for t in targets)
    torch.manual_seed(0)
    model = build_model(cfg).train()
    proposals = _fixed_proposals(model, images, targets)
    heads_before = _head_losses(model, images, targets, proposals)
    heads = [p for n, p in model.named_parameters() if n.startswith("roi_heads.")]
    rest = [p for n, p in model.named_parameters() if not n.startswith("roi_heads.")]
    opt = torch.optim.Adam([{"params": heads, "lr": HEADS_LR}, {"params": rest, "lr": LR}])
    rpn_forward = model.rpn.forward

    def rpn_plus_fixed(*args, **kwargs):  # the RPN's proposals (and losses) plus the fixed ones
        found, rpn_losses = rpn_forward(*args, **kwargs)
        return [torch.cat([f, p]) for f, p in zip(found, proposals)], rpn_losses

    history = []
    model.rpn.forward = rpn_plus_fixed
    try:
        for _ in range(ITERS):
            losses = model(images, [dict(t) for t in targets])
            total = sum(losses.values())
            history.append(float(total.detach()))
            opt.zero_grad(set_to_none=True)
            total.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)  # the first steps of a from-scratch model
            opt.step()
    finally:
        model.rpn.forward = rpn_forward
    heads_after = _head_losses(model, images, targets, proposals)
    last = sum(history[-3:]) / 3  # the training loss is noisy from step to step (sampled RoIs)
    drops = {"total": 1.0 - last / history[0]}
    drops.update({k: 1.0 - heads_after[k] / heads_before[k] for k in HEAD_LOSSES})
    report = {"iterations": ITERS, "optimizer": f"Adam lr {HEADS_LR} (RoI heads), {LR} (rest)", "total_first": history[0], "total_last3": last,
              "heads_before": {k: heads_before[k] for k in HEAD_LOSSES},
              "heads_after": {k: heads_after[k] for k in HEAD_LOSSES}, "drop": drops}
    print("learning test:", json.dumps(report, indent=1))
    if os.environ.get("GN_DET_LEARN_REPORT"):
        with open(os.environ["GN_DET_LEARN_REPORT"], "w", encoding="utf-8") as f:
            json.dump(report, f, indent=1)
    for key, drop in drops.items():
        assert drop >= MIN_DROP, f"{key} fell {drop:.0%} in {ITERS} iterations: {report}"
    model.eval()  # on the fixed proposals: the from-scratch RPN is not good yet after ITERS iterations
    model.rpn.forward = lambda *args, **kwargs: ([p.clone() for p in proposals], {})
    try:
        with torch.no_grad():
            outputs = model(images)
    finally:
        model.rpn.forward = rpn_forward
    for out, target in zip(outputs, targets):  # outputs and targets in the image's own pixels (64 px, not resized)
        assert len(out["scores"]) > 0
        top = int(out["scores"].argmax())
        iou = box_iou(out["boxes"][top:top + 1], target["boxes"])[0]
        match = int(iou.argmax())
        print("top detection:", out["labels"][top].item(), round(float(out["scores"][top]), 3), "IoU", round(float(iou[match]), 3),
              "with a ground truth of class", int(target["labels"][match]))
        assert iou[match] >= 0.5, (out["boxes"][top], target["boxes"])
        assert int(out["labels"][top]) == int(target["labels"][match]), (out["labels"][top], target["labels"][match])
