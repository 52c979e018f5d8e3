"""gn_det's builders registered in detectron2 (backbone, RPN head, box head, mask head) reading detectron2's cfg."""
import pytest

from d2_common import SKIP_REASON

pytest.importorskip("detectron2", reason=SKIP_REASON)

import torch  # noqa: E402
from torch import nn  # noqa: E402

from gn_det.layers import EvoNorm2dS0, FilterResponseNorm2d, WSConv2d, applies_activation, norm_name  # noqa: E402

GN_DET_BUILDERS = "Base-gn_det-builders.yaml"


def _losses(model, cfg):
    """One training forward of ``model`` on a batch of the tiny dataset (detectron2 logs into an EventStorage)."""
    from detectron2.utils.events import EventStorage
    with EventStorage(0):
        return model(_batch(cfg))


def _batch(cfg, n=2):
    from detectron2.data import build_detection_train_loader
    return next(iter(build_detection_train_loader(cfg)))[:n]


@pytest.mark.parametrize("norm,cls", [("FRN", FilterResponseNorm2d), ("EvoNormS0", EvoNorm2dS0)])
def test_norms_with_their_activation_replace_norm_and_relu(tiny_d2_cfg, norm, cls):
    from detectron2.modeling import build_model
    cfg = tiny_d2_cfg(GN_DET_BUILDERS, *[x for key in ("MODEL.RESNETS.NORM", "MODEL.FPN.NORM", "MODEL.ROI_BOX_HEAD.NORM",
                                                         "MODEL.ROI_MASK_HEAD.NORM", "MODEL.RPN.HEAD_NORM") for x in (key, norm)],
                      "MODEL.ROI_BOX_HEAD.NUM_CONV", "2", "MODEL.ROI_BOX_HEAD.NUM_FC", "1", "MODEL.BACKBONE.FREEZE_AT", "0")
    model = build_model(cfg)
    bb = model.backbone.bottom_up
    assert applies_activation(bb.stem.conv1.norm) and applies_activation(bb.res3[0].conv1.norm)
    assert not applies_activation(bb.res3[0].conv2.norm)  # the branch's last norm: before the residual add
    assert not applies_activation(model.backbone.fpn_output3.norm)  # no ReLU follows an FPN conv
    assert applies_activation(model.roi_heads.box_head.conv1.norm)
    assert applies_activation(model.roi_heads.mask_head.mask_fcn1.norm)
    assert applies_activation(model.proposal_generator.rpn_head.conv_norm)
    assert all(norm_name(m) == norm for m in model.modules() if isinstance(m, cls))
    losses = _losses(model, cfg)
    assert set(losses) == {"loss_cls", "loss_box_reg", "loss_rpn_cls", "loss_rpn_loc", "loss_mask"}
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()


def test_ws_xbn_and_per_level_rpn_norms(tiny_d2_cfg):
    from detectron2.modeling import build_model
    cfg = tiny_d2_cfg(GN_DET_BUILDERS, "MODEL.RESNETS.NORM", "BN", "MODEL.RESNETS.NORM_3X3", "GN",
                      "MODEL.RESNETS.CONV", "WS", "MODEL.FPN.NORM", "GN", "MODEL.FPN.CONV", "WS",
                      "MODEL.RPN.HEAD_NORM", "SN", "MODEL.ROI_BOX_HEAD.CONV", "WS", "MODEL.ROI_BOX_HEAD.NUM_CONV", "1",
                      "MODEL.ROI_BOX_HEAD.NORM", "GN", "MODEL.BACKBONE.FREEZE_AT", "0")
    model = build_model(cfg)
    bb = model.backbone.bottom_up
    assert isinstance(bb.res3[0].conv1, WSConv2d) and isinstance(model.backbone.fpn_lateral2, WSConv2d)
    assert isinstance(model.roi_heads.box_head.conv1, WSConv2d)
    assert norm_name(bb.res3[0].conv1.norm) == "GN" and norm_name(bb.res3[0].conv2.norm) == "BN"  # basic block: conv1
    per_level = model.proposal_generator.rpn_head.conv_norm
    assert isinstance(per_level, nn.ModuleList) and len(per_level) == 5 and per_level[0].weight is per_level[4].weight
    assert model.backbone.output_shape()["p6"].stride == 64 and model.backbone.size_divisibility == 32
    model.eval()
    with torch.no_grad():
        out = model([{"image": torch.randint(0, 255, (3, 64, 64)).float()}])
    assert "instances" in out[0]


def test_heads_take_empty_roi_batches(tiny_d2_cfg):
    from detectron2.layers import ShapeSpec
    from detectron2.modeling.roi_heads import build_box_head, build_mask_head
    cfg = tiny_d2_cfg(GN_DET_BUILDERS, "MODEL.ROI_BOX_HEAD.NUM_CONV", "2", "MODEL.ROI_BOX_HEAD.NUM_FC", "1",
                      "MODEL.ROI_BOX_HEAD.NORM", "SN", "MODEL.ROI_MASK_HEAD.NORM", "GN", "MODEL.SN.USE_BN", "False")
    box = build_box_head(cfg, ShapeSpec(channels=64, height=7, width=7))
    assert box.output_shape.channels == 64
    empty = torch.zeros(0, 64, 7, 7, requires_grad=True)
    out = box(empty)
    assert out.shape == (0, 64)
    out.sum().backward()
    mask = build_mask_head(cfg, ShapeSpec(channels=64, height=14, width=14))
    assert mask.layers(torch.zeros(0, 64, 14, 14)).shape == (0, 4, 28, 28)


def test_cpu_bf16_autocast_forward_and_backward(tiny_d2_cfg):
    from detectron2.modeling import build_model
    cfg = tiny_d2_cfg(GN_DET_BUILDERS, "MODEL.RESNETS.NORM", "SN", "MODEL.FPN.NORM", "SN", "MODEL.ROI_BOX_HEAD.NORM",
                      "SN", "MODEL.ROI_BOX_HEAD.NUM_CONV", "1", "MODEL.ROI_MASK_HEAD.NORM", "GN",
                      "MODEL.BACKBONE.FREEZE_AT", "0")
    model = build_model(cfg)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = _losses(model, cfg)
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    sn = model.backbone.bottom_up.res4[0].conv1.norm
    assert sn.running_mean.dtype == torch.float32 and sn.mean_weight.grad is not None


@pytest.mark.parametrize("head", ["FastRCNNConvFCHead", "GnDetFastRCNNConvFCHead"])
@pytest.mark.parametrize("norm", ["SN", "BRN", "FRN", "EvoNormS0", "EvoNormB0", "IN"])
def test_every_gn_det_norm_in_detectron2_and_gn_det_box_heads_takes_zero_rois(tiny_d2_cfg, head, norm):
    from detectron2.layers import ShapeSpec
    from detectron2.modeling.roi_heads import build_box_head
    cfg = tiny_d2_cfg(GN_DET_BUILDERS, "MODEL.ROI_BOX_HEAD.NAME", head, "MODEL.ROI_BOX_HEAD.NUM_CONV", "1",
                      "MODEL.ROI_BOX_HEAD.NUM_FC", "1", "MODEL.ROI_BOX_HEAD.NORM", norm)
    box = build_box_head(cfg, ShapeSpec(channels=64, height=7, width=7)).train()
    empty = torch.zeros(0, 64, 7, 7, requires_grad=True)
    out = box(empty)
    assert out.shape == (0, 64)
    out.sum().backward()
    for buf in box.buffers():  # running statistics stay finite after an empty batch
        assert torch.isfinite(buf.float()).all()
