"""Builders follow the declared norm: CONV keys pick WS per part, a norm that includes its activation
replaces norm + ReLU exactly where a ReLU follows, and the RPN head keeps per-level statistics."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gn_det.config import get_cfg
from gn_det.engine.precise_bn import update_bn_stats
from gn_det.layers import NORM_REGISTRY, Conv2d, NormTraits, WSConv2d, norm_name, register_norm
from gn_det.modeling import build_model, describe_model_parts
from gn_det.modeling.backbone import build_resnet_backbone

from .helpers import tiny_cfg

ALL_NORMS = ["MODEL.RESNETS.NORM", "MODEL.FPN.NORM", "MODEL.RPN.HEAD_NORM", "MODEL.ROI_BOX_HEAD.NORM",
             "MODEL.ROI_MASK_HEAD.NORM"]


def test_conv_keys_pick_ws_per_part():
    def conv_types(model):
        return {name: type(m) for name, m in model.named_modules() if isinstance(m, nn.Conv2d)}

    for key, part in [("MODEL.RESNETS.CONV", "backbone.bottom_up."), ("MODEL.FPN.CONV", "backbone.fpn_"),
                      ("MODEL.RPN.HEAD_CONV", "rpn.head.conv"), ("MODEL.ROI_BOX_HEAD.CONV", "roi_heads.box_head.conv"),
                      ("MODEL.ROI_MASK_HEAD.CONV", "roi_heads.mask_head.mask_fcn")]:
        cfg = tiny_cfg("tiny/mask_rcnn_R_18_FPN_gn.yaml", key, "WS", "MODEL.RPN.HEAD_NORM", "GN",
                       "MODEL.ROI_BOX_HEAD.NUM_CONV", 2)
        types = conv_types(build_model(cfg))
        ws = sorted(name for name, t in types.items() if t is WSConv2d)
        assert ws and all(name.startswith(part) for name in ws), (key, ws)
        expected = [n for n in types if n.startswith(part)]  # every conv of the part, nothing else
        assert ws == sorted(expected), key
    plain = build_model(tiny_cfg())
    assert not any(isinstance(m, WSConv2d) for m in plain.modules())


# --- a norm that includes its activation (as FRN+TLU and EvoNorm do) ---------------------------------

class ActNorm(nn.Module):
    """``x * weight + bias``, then ``tanh - 0.5`` when it applies its activation (negative outputs a ReLU
    would clip, so a ReLU left behind is visible)."""

    def __init__(self, channels, apply_act):
        super().__init__()
        self.apply_act = apply_act
        self.weight = nn.Parameter(torch.rand(channels) + 0.5)
        self.bias = nn.Parameter(torch.rand(channels) - 0.5)

    def forward(self, x):
        y = x * self.weight[:, None, None] + self.bias[:, None, None]
        return torch.tanh(y) - 0.5 if self.apply_act else y


@pytest.fixture
def act_norm():
    @register_norm("TestActNorm", traits=NormTraits(kind="TestActNorm", includes_activation=True),
                   module_types=(ActNorm,))
    def build(channels, options, *, apply_act):
        return ActNorm(channels, apply_act)

    yield
    NORM_REGISTRY.unregister("TestActNorm")


def _followed_by_relu(name, relu_convs):
    """Where the architecture puts a ReLU after the norm: the stem, the block convs ``relu_convs`` (those
    before the last one of the residual branch) and the head convs; never the FPN, shortcuts, last convs."""
    if name.endswith("stem.conv1"):
        return True
    if ".res" in f".{name}":
        return name.rsplit(".", 1)[-1] in relu_convs
    return name.startswith(("roi_heads.", "rpn."))


def test_act_norm_replaces_the_relu_exactly_where_one_follows(act_norm):
    model = build_model(tiny_cfg("tiny/mask_rcnn_R_18_FPN_gn.yaml", *sum(([k, "TestActNorm"] for k in ALL_NORMS), []),
                                 "MODEL.ROI_BOX_HEAD.NUM_CONV", 2, "MODEL.BACKBONE.FREEZE_AT", 0))
    convs = {n: m for n, m in model.named_modules() if isinstance(m, Conv2d) and isinstance(m.norm, ActNorm)}
    assert len(convs) == 1 + 8 * 2 + 3 + 8 + 2 + 4  # stem, R-18 blocks, shortcuts, FPN, box and mask heads
    for name, conv in convs.items():
        assert conv.norm.apply_act == _followed_by_relu(name, ("conv1",)), name
        assert conv.activation is None, name  # never a ReLU after a TestActNorm
    head = model.rpn.head
    assert head.conv_norm.apply_act
    feats = [torch.randn(1, 64, 4, 4)]
    logits, _ = head(feats)
    expected = head.cls_logits(torch.tanh(head.conv(feats[0]) * head.conv_norm.weight[:, None, None]
                                          + head.conv_norm.bias[:, None, None]) - 0.5)
    torch.testing.assert_close(logits[0], expected, rtol=0, atol=0)  # no ReLU between norm and the 1x1s
    block = model.backbone.bottom_up.res3[0]
    x = torch.randn(2, 64, 8, 8)
    n1, n2, sc = block.conv1.norm, block.conv2.norm, block.shortcut
    h = torch.tanh(n1.weight[:, None, None] * F.conv2d(x, block.conv1.weight, stride=2, padding=1)
                   + n1.bias[:, None, None]) - 0.5
    h = F.conv2d(h, block.conv2.weight, padding=1) * n2.weight[:, None, None] + n2.bias[:, None, None]
    s = F.conv2d(x, sc.weight, stride=2) * sc.norm.weight[:, None, None] + sc.norm.bias[:, None, None]
    torch.testing.assert_close(block(x), F.relu(h + s), rtol=1e-5, atol=1e-5)  # the ReLU after the add stays


def test_act_norm_in_bottlenecks_and_other_norms_keep_their_relu(act_norm):
    cfg = get_cfg()
    cfg.merge_from_list(["MODEL.RESNETS.NORM", "TestActNorm", "MODEL.RESNETS.NORM_3X3", "GN",
                         "MODEL.BACKBONE.FREEZE_AT", 0, "MODEL.RESNETS.OUT_FEATURES", ["res2"]])
    resnet = build_resnet_backbone(cfg)
    for name, conv in resnet.named_modules():
        if not isinstance(conv, Conv2d):
            continue
        if isinstance(conv.norm, ActNorm):
            assert conv.norm.apply_act == _followed_by_relu(name, ("conv1", "conv2")) and conv.activation is None, name
        else:  # GN at the 3x3 convs and the stem (XBN position): ReLU kept
            assert norm_name(conv.norm) == "GN" and conv.activation is F.relu_, name


# --- RPN head: one norm per level for norms with running statistics ----------------------------------

class _HeadOnLevels(nn.Module):
    """The RPN head fed five levels made from the images (level k shifted and scaled), as precise BN runs it."""

    def __init__(self, head):
        super().__init__()
        self.head = head

    @staticmethod
    def levels(images):
        x = torch.stack(images)
        return [x * (k + 1) + 3.0 * k for k in range(5)]

    def forward(self, images, targets=None):
        return self.head(self.levels(images))


def test_rpn_head_bn_keeps_statistics_per_level():
    model = build_model(tiny_cfg("tiny/mask_rcnn_R_18_FPN_gn.yaml", "MODEL.RPN.HEAD_NORM", "BN"))
    head = model.rpn.head.double()
    assert isinstance(head.conv_norm, nn.ModuleList) and len(head.conv_norm) == 5
    assert all(n.weight is head.conv_norm[0].weight and n.bias is head.conv_norm[0].bias for n in head.conv_norm)
    rpn = {r["part"]: r for r in describe_model_parts(model)}["RPN"]
    assert (rpn["num_norms"], rpn["norm"]) == (1, "BatchNorm2d x1")  # one norm, statistics per level
    keys = set(model.state_dict())
    assert {"rpn.head.conv_norm.0.weight", "rpn.head.conv_norm.4.running_var"} <= keys
    with torch.no_grad():
        head.conv_norm[0].weight.uniform_(0.5, 2)
    g = torch.Generator().manual_seed(0)
    batches = [[(torch.randn(64, 6, 6, generator=g, dtype=torch.float64), {}) for _ in range(2)] for _ in range(3)]
    wrapper = _HeadOnLevels(head)
    assert update_bn_stats(wrapper, iter(batches), 3) == 5
    with torch.no_grad():
        for k in range(5):  # precise BN: each level's statistics are the average over its own batches
            convs = [head.conv(_HeadOnLevels.levels([i for i, _ in b])[k]) for b in batches]
            mean = torch.stack([c.mean(dim=(0, 2, 3)) for c in convs]).mean(0)
            torch.testing.assert_close(head.conv_norm[k].running_mean, mean, rtol=1e-10, atol=1e-10)
        images = [i for i, _ in batches[0]]
        logits, _ = wrapper.eval()(images)
        p2 = head.conv(_HeadOnLevels.levels(images)[0])
        n2 = head.conv_norm[0]
        normed = (p2 - n2.running_mean[:, None, None]) / torch.sqrt(n2.running_var[:, None, None] + n2.eps)
        expected = head.cls_logits(F.relu(normed * n2.weight[:, None, None] + n2.bias[:, None, None]))
        torch.testing.assert_close(logits[0], expected, rtol=1e-10, atol=1e-10)  # p2 with p2's statistics
    with pytest.raises(ValueError, match=r"one norm per level for 5 levels \(MODEL.RPN.IN_FEATURES\), got 2 feature"):
        head([torch.zeros(1, 64, 4, 4, dtype=torch.float64)] * 2)


def test_rpn_head_batch_free_norm_stays_shared():
    head = build_model(tiny_cfg("tiny/mask_rcnn_R_18_FPN_gn.yaml", "MODEL.RPN.HEAD_NORM", "GN")).rpn.head
    assert isinstance(head.conv_norm, nn.GroupNorm)


def test_rpn_head_norm_built_once_per_level(monkeypatch):
    """build_rpn_head_norm builds num_levels norms for a norm with running statistics (the one built to read
    its traits is level 0), and one for a shared norm."""
    from gn_det.modeling import rpn

    built = []

    def counting_get_norm(*args, **kwargs):
        built.append(rpn.get_norm.__wrapped__(*args, **kwargs))
        return built[-1]

    counting_get_norm.__wrapped__ = rpn.get_norm
    monkeypatch.setattr(rpn, "get_norm", counting_get_norm)
    cfg = tiny_cfg("tiny/mask_rcnn_R_18_FPN_gn.yaml", "MODEL.RPN.HEAD_NORM", "BN")
    norms = rpn.build_rpn_head_norm(cfg, 64, 5)
    assert len(norms) == 5 and len(built) == 5 and all(a is b for a, b in zip(norms, built))
    built.clear()
    cfg = tiny_cfg("tiny/mask_rcnn_R_18_FPN_gn.yaml", "MODEL.RPN.HEAD_NORM", "GN")
    assert rpn.build_rpn_head_norm(cfg, 64, 5) is built[0] and len(built) == 1
