"""ResNet/FPN structure: norms where the config puts them, XBN's NORM_3X3, FREEZE_AT, strides, names."""
import pytest
import torch
from torch import nn

from gn_det.config import get_cfg
from gn_det.layers import FrozenBatchNorm2d
from gn_det.modeling import Conv2d, build_model, describe_model_parts
from gn_det.modeling.backbone import build_resnet_backbone, build_resnet_fpn_backbone

from .helpers import tiny_cfg


def _cfg(*overrides):
    cfg = get_cfg()
    cfg.merge_from_list(list(overrides))
    return cfg


def _norm_names(module):
    return {name: type(m) for name, m in module.named_modules() if name.endswith("norm")}


GN_R50_MASK = ["MODEL.MASK_ON", True, "MODEL.RESNETS.NORM", "GN", "MODEL.FPN.NORM", "GN", "MODEL.ROI_BOX_HEAD.NORM", "GN",
               "MODEL.ROI_BOX_HEAD.NUM_CONV", 4, "MODEL.ROI_BOX_HEAD.NUM_FC", 1, "MODEL.ROI_MASK_HEAD.NORM", "GN"]


def test_gn_r50_fpn_mask_rcnn_has_69_group_norms():
    """Issue 4: 53 in the ResNet (1 stem + 3 x 16 blocks + 4 shortcuts), 8 in the FPN, 4 per head."""
    rows = {r["part"]: r for r in describe_model_parts(build_model(_cfg(*GN_R50_MASK)))}
    per_part = {p: r["num_norms"] for p, r in rows.items()}
    assert per_part == {"stem": 1, "res2": 3 * 3 + 1, "res3": 4 * 3 + 1, "res4": 6 * 3 + 1, "res5": 3 * 3 + 1,
                        "FPN": 8, "RPN": 0, "box head": 4, "mask head": 4}
    assert sum(per_part.values()) == 69
    assert all(r["norm"] in ("-", f"GroupNorm x{r['num_norms']}") for r in rows.values())
    assert (rows["stem"]["state"], rows["res2"]["state"], rows["res3"]["state"]) == ("frozen", "frozen", "trainable")


def test_frozen_bn_baseline_norms_only_in_resnet():
    model = build_model(_cfg("MODEL.MASK_ON", True))
    rows = {r["part"]: r for r in describe_model_parts(model)}
    assert rows["res4"]["norm"] == "FrozenBatchNorm2d x19"
    assert rows["FPN"]["num_norms"] == rows["box head"]["num_norms"] == rows["mask head"]["num_norms"] == 0
    assert model.backbone.fpn_lateral2.bias is not None  # no norm -> conv keeps its bias


@pytest.mark.parametrize("depth,first", [(50, "conv2"), (18, "conv1")])
def test_norm_3x3_lands_exactly_at_3x3_positions_and_stem(depth, first):
    """XBN (Huang et al. CVPR 2022): GN at each bottleneck's 3x3 (basic block: conv1) and the stem; BN elsewhere."""
    cfg = _cfg("MODEL.RESNETS.DEPTH", depth, "MODEL.RESNETS.RES2_OUT_CHANNELS", 256 if depth >= 50 else 64,
               "MODEL.RESNETS.NORM", "BN", "MODEL.RESNETS.NORM_3X3", "GN", "MODEL.BACKBONE.FREEZE_AT", 0)
    resnet = build_resnet_backbone(cfg)
    norms = _norm_names(resnet)
    gn = {n for n, t in norms.items() if issubclass(t, nn.GroupNorm)}
    expected = {"stem.conv1.norm"} | {f"{stage}.{i}.{first}.norm" for stage in resnet.stage_names
                                      for i in range(len(getattr(resnet, stage)))}
    assert gn == expected
    assert all(issubclass(t, nn.BatchNorm2d) for n, t in norms.items() if n not in gn)
    assert any(n.endswith("shortcut.norm") for n in norms) and "res3.0.shortcut.norm" not in gn


@pytest.mark.parametrize("freeze_at", range(6))
def test_freeze_at_detectron2_semantics(freeze_at):
    """1 = stem, k = stem + res2..res<k>; frozen parts: no grad and BN statistics frozen (FrozenBN)."""
    resnet = build_resnet_backbone(_cfg("MODEL.RESNETS.DEPTH", 18, "MODEL.RESNETS.RES2_OUT_CHANNELS", 64,
                                        "MODEL.RESNETS.NORM", "BN", "MODEL.BACKBONE.FREEZE_AT", freeze_at))
    for index, name in enumerate(["stem", "res2", "res3", "res4", "res5"], start=1):
        part = getattr(resnet, name)
        frozen = index <= freeze_at
        assert all(p.requires_grad != frozen for p in part.parameters()), name
        norms = [m for n, m in part.named_modules() if n.endswith("norm")]
        assert norms and all(isinstance(m, FrozenBatchNorm2d) if frozen else isinstance(m, nn.BatchNorm2d) for m in norms), name


def test_frozen_stage_statistics_do_not_move_in_training():
    resnet = build_resnet_backbone(_cfg("MODEL.RESNETS.DEPTH", 18, "MODEL.RESNETS.RES2_OUT_CHANNELS", 64,
                                        "MODEL.RESNETS.NORM", "BN", "MODEL.BACKBONE.FREEZE_AT", 2)).train()
    before = {k: v.clone() for k, v in resnet.state_dict().items()}
    resnet(torch.rand(2, 3, 64, 64) * 255)
    after = resnet.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith(("stem.", "res2.")))
    assert not torch.equal(before["res3.0.conv1.norm.running_mean"], after["res3.0.conv1.norm.running_mean"])


def test_freeze_at_gn_freezes_affine():
    resnet = build_resnet_backbone(_cfg("MODEL.RESNETS.NORM", "GN", "MODEL.BACKBONE.FREEZE_AT", 3))
    assert not resnet.res3[0].conv2.norm.weight.requires_grad and resnet.res4[0].conv2.norm.weight.requires_grad


@pytest.mark.parametrize("stride_in_1x1", [True, False])
def test_stride_in_1x1(stride_in_1x1):
    resnet = build_resnet_backbone(_cfg("MODEL.RESNETS.STRIDE_IN_1X1", stride_in_1x1, "MODEL.RESNETS.NORM", "BN"))
    block = resnet.res3[0]
    assert block.conv1.stride == ((2, 2) if stride_in_1x1 else (1, 1))
    assert block.conv2.stride == ((1, 1) if stride_in_1x1 else (2, 2))
    assert block.shortcut.stride == (2, 2)


def test_zero_init_residual_and_bias_off_when_normed():
    resnet = build_resnet_backbone(_cfg("MODEL.RESNETS.NORM", "GN", "MODEL.RESNETS.ZERO_INIT_RESIDUAL", True))
    for stage in resnet.stage_names:
        for block in getattr(resnet, stage):
            assert torch.count_nonzero(block.conv3.norm.weight) == 0
            assert torch.count_nonzero(block.conv2.norm.weight) == block.conv2.norm.weight.numel()
    assert all(m.bias is None for m in resnet.modules() if isinstance(m, Conv2d) and m.norm is not None)


def test_resnext_groups_and_widths():
    resnet = build_resnet_backbone(_cfg("MODEL.RESNETS.NUM_GROUPS", 32, "MODEL.RESNETS.WIDTH_PER_GROUP", 4,
                                        "MODEL.RESNETS.NORM", "GN"))
    assert resnet.res2[0].conv2.groups == 32 and resnet.res2[0].conv2.out_channels == 128  # 32x4d
    assert resnet.res5[0].conv2.out_channels == 128 * 8


def test_fpn_outputs_and_strides():
    cfg = tiny_cfg("tiny/mask_rcnn_R_18_FPN_gn.yaml")
    fpn = build_resnet_fpn_backbone(cfg).eval()
    with torch.no_grad():
        out = fpn(torch.rand(1, 3, 64, 96) * 255)
    assert list(out) == ["p2", "p3", "p4", "p5", "p6"]
    assert [tuple(v.shape[-2:]) for v in out.values()] == [(16, 24), (8, 12), (4, 6), (2, 3), (1, 2)]
    assert all(v.shape[1] == 64 for v in out.values())


def test_interface_module_names():
    """docs/INTERFACES.md names, which the weights engineer maps checkpoints onto."""
    cfg = _cfg(*GN_R50_MASK, "MODEL.RPN.HEAD_NORM", "GN")
    keys = set(build_model(cfg).state_dict())
    for name in ["backbone.bottom_up.stem.conv1.weight", "backbone.bottom_up.stem.conv1.norm.weight",
                 "backbone.bottom_up.res2.0.conv1.weight", "backbone.bottom_up.res2.0.conv3.norm.bias",
                 "backbone.bottom_up.res2.0.shortcut.weight", "backbone.bottom_up.res5.2.conv2.norm.weight",
                 "backbone.bottom_up.res4.0.shortcut.norm.weight", "backbone.fpn_lateral2.weight",
                 "backbone.fpn_lateral5.norm.weight", "backbone.fpn_output3.norm.bias", "rpn.head.conv.weight",
                 "rpn.head.conv_norm.weight", "rpn.head.cls_logits.weight", "rpn.head.bbox_pred.bias",
                 "roi_heads.box_head.conv1.weight", "roi_heads.box_head.conv4.norm.weight", "roi_heads.box_head.fc1.weight",
                 "roi_heads.box_predictor.cls_score.weight", "roi_heads.box_predictor.bbox_pred.bias",
                 "roi_heads.mask_head.mask_fcn1.weight", "roi_heads.mask_head.mask_fcn4.norm.bias",
                 "roi_heads.mask_predictor.deconv.weight", "roi_heads.mask_predictor.predictor.weight"]:
        assert name in keys, name
    assert "rpn.head.conv.bias" not in keys and "backbone.fpn_lateral2.bias" not in keys  # normed convs: no bias
    sd = build_model(cfg).state_dict()
    assert sd["roi_heads.box_predictor.cls_score.weight"].shape[0] == 81
    assert sd["roi_heads.box_predictor.bbox_pred.weight"].shape[0] == 81 * 4
    assert sd["roi_heads.mask_predictor.predictor.weight"].shape[0] == 81


BAD_BACKBONE = [
    (["MODEL.RESNETS.DEPTH", 42], ValueError, "MODEL.RESNETS.DEPTH must be one of [18, 34, 50, 101, 152], got 42"),
    (["MODEL.RESNETS.DEPTH", 18], ValueError, "MODEL.RESNETS.RES2_OUT_CHANNELS must be 64 for R-18, got 256"),
    (["MODEL.BACKBONE.FREEZE_AT", 7], ValueError, "MODEL.BACKBONE.FREEZE_AT should be in [0, 5], got 7"),
    (["MODEL.FPN.FUSE_TYPE", "max"], ValueError, "MODEL.FPN.FUSE_TYPE must be 'sum' or 'avg', got 'max'"),
    (["MODEL.FPN.NORM", "GN", "MODEL.FPN.OUT_CHANNELS", 250], ValueError, "MODEL.GN.NUM_GROUPS"),
    (["MODEL.ANCHOR_GENERATOR.SIZES", [[32], [64]]], ValueError,
     "MODEL.ANCHOR_GENERATOR.SIZES has 2 levels but MODEL.RPN.IN_FEATURES has 5"),
    (["MODEL.ROI_HEADS.NAME", "CascadeROIHeads"], ValueError,
     "MODEL.ROI_HEADS.NAME must be 'StandardROIHeads' (torchvision's RoIHeads; choose the heads with"),
    (["MODEL.BACKBONE.NAME", "build_vit_backbone"], KeyError,
     "Unknown BACKBONE name 'build_vit_backbone' (from MODEL.BACKBONE.NAME). Registered names:"),
]


@pytest.mark.parametrize("overrides,error,message", BAD_BACKBONE)
def test_bad_model_config_errors(overrides, error, message):
    with pytest.raises(error) as info:
        build_model(_cfg(*overrides))
    assert message in str(info.value)
