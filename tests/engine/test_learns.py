"""The detector learns: one fixed batch of 2 shapes images, 20 SGD iterations of the tiny GN Mask R-CNN
(tests/engine/tiny_mask_rcnn.yaml) on CPU. The total loss and each of the classification, box and mask
losses fall by at least 40%, and in eval mode the top detection on each training image has the class of
one of its shapes. A few seconds; the figures it measured are printed (``pytest -s``) and written to
``$GN_DET_LEARN_REPORT`` when that is set."""
import json
import os

import torch

from gn_det.config import get_cfg
from gn_det.data import build_detection_train_loader, generate_shapes_dataset, register_coco_instances
from gn_det.modeling import build_model

HERE = os.path.dirname(os.path.abspath(__file__))
CONFIG = os.path.join(HERE, "tiny_mask_rcnn.yaml")
ITERS = 20
HEAD_LOSSES = ("loss_classifier", "loss_box_reg", "loss_mask")
LR = 5e-3
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
    """Deterministic proposals for the RoI heads: each ground-truth box shifted by -30..30% of its size
    (positives and negatives at IoU 0.5) plus 16 seeded random boxes per image, in the model's input
    coordinates (after its transform)."""
    g = torch.Generator().manual_seed(7)
    image_list, resized = model.transform([i.clone() for i in images], [dict(t) for t in targets])
    out = []
    for t, (h, w) in zip(resized, image_list.image_sizes):
        gt = t["boxes"]
        size = (gt[:, 2:] - gt[:, :2]).repeat(1, 2)
        boxes = [gt + size * f for f in (-0.3, -0.15, -0.05, 0.05, 0.15, 0.3)]
        boxes.append(gt + size * torch.tensor([0.1, -0.1, 0.1, -0.1]))
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
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    history = []
    for _ in range(ITERS):
        losses = model(images, [dict(t) for t in targets])
        total = sum(losses.values())
        history.append(float(total.detach()))
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
    heads_after = _head_losses(model, images, targets, proposals)
    last = sum(history[-3:]) / 3  # the training loss is noisy from step to step (sampled RoIs)
    drops = {"total": 1.0 - last / history[0]}
    drops.update({k: 1.0 - heads_after[k] / heads_before[k] for k in HEAD_LOSSES})
    report = {"iterations": ITERS, "optimizer": f"Adam lr {LR}", "total_first": history[0], "total_last3": last,
              "heads_before": {k: heads_before[k] for k in HEAD_LOSSES},
              "heads_after": {k: heads_after[k] for k in HEAD_LOSSES}, "drop": drops}
    print("learning test:", json.dumps(report, indent=1))
    if os.environ.get("GN_DET_LEARN_REPORT"):
        with open(os.environ["GN_DET_LEARN_REPORT"], "w", encoding="utf-8") as f:
            json.dump(report, f, indent=1)
    for key, drop in drops.items():
        assert drop >= MIN_DROP, f"{key} fell {drop:.0%} in {ITERS} iterations: {report}"
    model.eval()
    with torch.no_grad():
        outputs = model(images)
    for out, target in zip(outputs, targets):
        assert len(out["scores"]) > 0
        top = int(out["scores"].argmax())
        assert int(out["labels"][top]) in set(target["labels"].tolist()), (out["labels"][:5], target["labels"])
