"""Heads, the normalize/pad transform and outputs at the original size, registration of user parts from YAML, describe_model."""
import math
from collections import OrderedDict

import pytest
import torch
from torch import nn

from gn_det.config import get_cfg, resolve_config_path
from gn_det.layers import NORM_REGISTRY
from gn_det.modeling import BACKBONE_REGISTRY, ROI_BOX_HEAD_REGISTRY, build_model
from gn_det.modeling.meta_arch import build_transform

from .helpers import tiny_batch, tiny_cfg


def test_transform_normalizes_and_pads_without_resizing():
    """The loader resizes; the model only normalizes with PIXEL_MEAN/STD (0-255, INPUT.FORMAT order) and
    zero-pads the batch to a multiple of 32, in training and eval; targets pass through unchanged."""
    cfg = get_cfg()
    cfg.merge_from_list(["MODEL.PIXEL_MEAN", [10.0, 20.0, 30.0], "MODEL.PIXEL_STD", [2.0, 4.0, 5.0],
                         "INPUT.MIN_SIZE_TEST", 32, "INPUT.MAX_SIZE_TEST", 64, "INPUT.MIN_SIZE_TRAIN", (64,)])
    transform = build_transform(cfg)
    images = [torch.arange(3 * 37 * 70, dtype=torch.float32).reshape(3, 37, 70) % 256, torch.rand(3, 20, 30) * 255]
    mean, std = torch.tensor([10.0, 20.0, 30.0])[:, None, None], torch.tensor([2.0, 4.0, 5.0])[:, None, None]
    target = {"boxes": torch.tensor([[2.0, 4, 10, 20]]), "labels": torch.tensor([1])}
    for mode in (transform.train(), transform.eval()):
        batch, targets = mode(images, [target, target])
        assert batch.image_sizes == [(37, 70), (20, 30)] and batch.tensors.shape == (2, 3, 64, 96)
        torch.testing.assert_close(batch.tensors[0, :, :37, :70], (images[0] - mean) / std)
        assert batch.tensors[0, :, 37:].abs().sum() == 0 and batch.tensors[1, :, :, 30:].abs().sum() == 0
        assert torch.equal(targets[0]["boxes"], target["boxes"])


def test_eval_outputs_map_to_original_sizes():
    """model(images, original_sizes=...) scales boxes by original / input size per axis (detectron2's
    detector_postprocess) and pastes masks at the original size; without it outputs stay in input pixels."""
    torch.manual_seed(0)
    model = build_model(tiny_cfg("tiny/mask_rcnn_R_18_FPN_gn.yaml", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", 0.0)).eval()
    image = torch.rand(3, 64, 80) * 255
    with torch.no_grad():
        same = model([image])[0]
        mapped = model([image], original_sizes=[(96, 160)])[0]
    assert len(same["boxes"]) > 0 and same["masks"].shape[-2:] == (64, 80) and mapped["masks"].shape[-2:] == (96, 160)
    torch.testing.assert_close(mapped["boxes"], same["boxes"] * torch.tensor([2.0, 1.5, 2.0, 1.5]), rtol=1e-6, atol=1e-4)
    torch.testing.assert_close(mapped["scores"], same["scores"])
    with pytest.raises(ValueError, match=r"original_sizes has 2 entries for 1 images; give one \(height, width\) per image"):
        model([image], original_sizes=[(1, 1), (2, 2)])


def test_box_head_shapes_4conv1fc_and_2fc():
    cfg = tiny_cfg()
    head = ROI_BOX_HEAD_REGISTRY.get("FastRCNNConvFCHead")(cfg, 64, 7)
    assert [n for n, _ in head.named_children()] == ["conv1", "conv2", "conv3", "conv4", "fc1"]
    assert head(torch.rand(3, 64, 7, 7)).shape == (3, 256) and head.out_features == 256
    assert all(getattr(head, f"conv{k}").bias is None for k in range(1, 5))
    cfg.merge_from_list(["MODEL.ROI_BOX_HEAD.NUM_CONV", 0, "MODEL.ROI_BOX_HEAD.NUM_FC", 2])
    head = ROI_BOX_HEAD_REGISTRY.get("FastRCNNConvFCHead")(cfg, 64, 7)
    assert [n for n, _ in head.named_children()] == ["fc1", "fc2"] and head.fc1.in_features == 64 * 49


def test_empty_roi_batch_goes_through_normed_heads():
    """Images without boxes and eval with no proposals: GN heads take 0-row inputs."""
    model = build_model(tiny_cfg())
    out = model.roi_heads.mask_head(torch.zeros(0, 64, 14, 14))
    assert out.shape == (0, 64, 14, 14)
    assert model.roi_heads.box_head(torch.zeros(0, 64, 7, 7)).shape == (0, 256)


def test_rpn_head_norm_and_in_features():
    model = build_model(tiny_cfg("tiny/mask_rcnn_R_18_FPN_gn.yaml", "MODEL.RPN.HEAD_NORM", "GN"))
    head = model.rpn.head
    assert isinstance(head.conv_norm, nn.GroupNorm) and head.conv.bias is None
    feats = [torch.rand(1, 64, 8, 8), torch.rand(1, 64, 4, 4)]
    logits, deltas = head(feats)
    assert [t.shape for t in logits] == [(1, 3, 8, 8), (1, 3, 4, 4)] and deltas[0].shape == (1, 12, 8, 8)
    assert model.rpn.in_features == ["p2", "p3", "p4", "p5", "p6"]


# --- user-registered parts, selected from YAML ------------------------------------------------

class _ScaleNorm(nn.Module):
    """A user norm: divides by the per-sample RMS (no batch statistics)."""

    def __init__(self, channels):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))

    def forward(self, x):
        return x / x.pow(2).mean(dim=(1, 2, 3), keepdim=True).add(1e-5).sqrt() * self.weight[:, None, None]




class _TinyBackbone(nn.Module):
    """A user backbone: two strided convs producing p2..p6 by pooling (contract: .out_channels, OrderedDict)."""

    def __init__(self, channels):
        super().__init__()
        self.out_channels = channels
        self.body = nn.Sequential(nn.Conv2d(3, channels, 3, stride=2, padding=1), nn.ReLU(),
                                  nn.Conv2d(channels, channels, 3, stride=2, padding=1))

    def forward(self, x):
        p2 = self.body(x)
        return OrderedDict((f"p{k}", nn.functional.max_pool2d(p2, 2 ** (k - 2)) if k > 2 else p2) for k in range(2, 7))


@pytest.fixture
def user_norm_and_backbone():
    """Register a user norm and backbone for one test, and remove them after it (global registries)."""
    NORM_REGISTRY.register("TestScaleNorm")(lambda channels, options: _ScaleNorm(channels))
    BACKBONE_REGISTRY.register("test_tiny_backbone")(lambda cfg: _TinyBackbone(cfg.MODEL.FPN.OUT_CHANNELS))
    yield
    NORM_REGISTRY.unregister("TestScaleNorm")
    BACKBONE_REGISTRY.unregister("test_tiny_backbone")


def test_user_registered_norm_and_backbone_from_yaml(tmp_path, user_norm_and_backbone):
    path = tmp_path / "user.yaml"
    path.write_text('_BASE_: "%s"\nMODEL:\n  BACKBONE:\n    NAME: "test_tiny_backbone"\n  ROI_BOX_HEAD:\n'
                    '    NORM: "TestScaleNorm"\n  ROI_MASK_HEAD:\n    NORM: "TestScaleNorm"\n'
                    % resolve_config_path("tiny/mask_rcnn_R_18_FPN_gn.yaml"))
    cfg = get_cfg()
    cfg.merge_from_file(str(path))
    cfg.merge_from_list(["INPUT.MIN_SIZE_TRAIN", (64,), "INPUT.MAX_SIZE_TRAIN", 96])
    model = build_model(cfg)
    assert isinstance(model.backbone, _TinyBackbone)
    assert isinstance(model.roi_heads.box_head.conv1.norm, _ScaleNorm)
    assert isinstance(model.roi_heads.mask_head.mask_fcn4.norm, _ScaleNorm)
    images, targets = tiny_batch()
    losses = model.train()(images, targets)
    assert all(math.isfinite(v.item()) for v in losses.values())


def test_describe_model_tool_prints_parts(capsys):
    import importlib.util
    import pathlib

    spec = importlib.util.spec_from_file_location(
        "describe_model", pathlib.Path(__file__).resolve().parents[2] / "tools" / "describe_model.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    text = tool.main(["--config", "mask_rcnn_R_18_FPN_gn.yaml", "MODEL.BACKBONE.FREEZE_AT", "0"])
    lines = {line.split()[0] + (" " + line.split()[1] if line.startswith(("box", "mask")) else ""): line
             for line in text.splitlines()[2:] if line.strip() and not line.startswith("-")}
    assert "GroupNorm x1" in lines["stem"] and "trainable" in lines["stem"]
    assert "GroupNorm x8" in lines["FPN"] and "GroupNorm x4" in lines["box head"] and "GroupNorm x4" in lines["mask head"]
    assert lines["total"].split()[1] == "36"  # 1 + 2*8 + 3 shortcuts = 20, + 8 + 4 + 4
