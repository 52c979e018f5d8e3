"""A parameter-only stand-in with docs/INTERFACES.md's module names, for tests of name mapping and matching
that must not depend on the real detector (tests against real models use gn_det.modeling.build_model)."""
from __future__ import annotations

from torch import nn

from gn_det.layers import GNOptions, NormOptions, get_norm


class ConvNorm(nn.Conv2d):
    """nn.Conv2d with a ``.norm`` child, bias off when normed (gn_det.layers.Conv2d's layout)."""

    def __init__(self, cin, cout, k, norm, stride=1):
        super().__init__(cin, cout, k, stride=stride, padding=k // 2, bias=not norm)
        self.norm = get_norm(norm, cout, NormOptions(GNOptions(num_groups=2)))


def contract_model(norm="FrozenBN", num_classes=3, mask=True, blocks=(1, 1, 1, 1), width=4) -> nn.Module:
    """Backbone (stem, res2-res5 bottlenecks, FPN), RPN head, box and mask heads; tiny channel counts."""
    root = nn.Module()
    root.backbone = nn.Module()
    bottom_up = root.backbone.bottom_up = nn.Module()
    bottom_up.stem = nn.Module()
    bottom_up.stem.conv1 = ConvNorm(3, width, 7, norm)
    cin = width
    for stage, n in zip(range(2, 6), blocks):
        mid = width * 2 ** (stage - 2)
        out = mid * 4
        blocks_ = []
        for i in range(n):
            b = nn.Module()
            b.conv1 = ConvNorm(cin, mid, 1, norm)
            b.conv2 = ConvNorm(mid, mid, 3, norm)
            b.conv3 = ConvNorm(mid, out, 1, norm)
            if i == 0:
                b.shortcut = ConvNorm(cin, out, 1, norm)
            blocks_.append(b)
            cin = out
        setattr(bottom_up, f"res{stage}", nn.Sequential(*blocks_))
        setattr(root.backbone, f"fpn_lateral{stage}", nn.Conv2d(out, 8, 1))
        setattr(root.backbone, f"fpn_output{stage}", nn.Conv2d(8, 8, 3, padding=1))
    root.rpn = nn.Module()
    root.rpn.head = nn.Module()
    root.rpn.head.conv = nn.Conv2d(8, 8, 3, padding=1)
    root.rpn.head.cls_logits = nn.Conv2d(8, 3, 1)
    root.rpn.head.bbox_pred = nn.Conv2d(8, 12, 1)
    root.roi_heads = nn.Module()
    root.roi_heads.box_head = nn.Module()
    root.roi_heads.box_head.fc1 = nn.Linear(8 * 2 * 2, 16)
    root.roi_heads.box_head.fc2 = nn.Linear(16, 16)
    root.roi_heads.box_predictor = nn.Module()
    root.roi_heads.box_predictor.cls_score = nn.Linear(16, num_classes + 1)
    root.roi_heads.box_predictor.bbox_pred = nn.Linear(16, (num_classes + 1) * 4)
    if mask:
        root.roi_heads.mask_head = nn.Module()
        root.roi_heads.mask_head.mask_fcn1 = ConvNorm(8, 8, 3, "")
        root.roi_heads.mask_predictor = nn.Module()
        root.roi_heads.mask_predictor.deconv = nn.ConvTranspose2d(8, 8, 2, stride=2)
        root.roi_heads.mask_predictor.predictor = nn.Conv2d(8, num_classes + 1, 1)
    return root
