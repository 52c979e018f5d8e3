"""The XBN option (Huang et al. CVPR 2022): GN at exactly each bottleneck's 3x3 conv and the stem."""
import re

from torch import nn

from gn_det.config import get_cfg
from gn_det.modeling.backbone import build_resnet_backbone

BLOCKS_R50 = (3, 4, 6, 3)
GN_POSITION = re.compile(r"^(stem\.conv1|res[2-5]\.\d+\.conv2)\.norm$")


def test_gn_at_exactly_the_3x3_convs_and_stem():
    cfg = get_cfg()
    cfg.MODEL.RESNETS.DEPTH = 50
    cfg.MODEL.RESNETS.NORM = "BN"
    cfg.MODEL.RESNETS.NORM_3X3 = "GN"
    cfg.MODEL.RESNETS.STEM_OUT_CHANNELS = 16
    cfg.MODEL.RESNETS.WIDTH_PER_GROUP = 8
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 32
    cfg.MODEL.GN.NUM_GROUPS = 4
    cfg.MODEL.BACKBONE.FREEZE_AT = 0
    backbone = build_resnet_backbone(cfg)
    norms = {name: m for name, m in backbone.named_modules() if name.endswith(".norm")}
    gn = sorted(n for n, m in norms.items() if isinstance(m, nn.GroupNorm))
    bn = sorted(n for n, m in norms.items() if isinstance(m, nn.BatchNorm2d))
    assert len(gn) + len(bn) == len(norms)  # no third kind
    assert gn == sorted(n for n in norms if GN_POSITION.match(n))
    assert len(gn) == 1 + sum(BLOCKS_R50)  # the stem and one 3x3 per bottleneck
    for name, module in backbone.named_modules():
        if isinstance(module, nn.Conv2d) and getattr(module, "norm", None) is not None:
            is_3x3 = module.kernel_size == (3, 3) and not name.startswith("stem")
            assert isinstance(module.norm, nn.GroupNorm) == (is_3x3 or name == "stem.conv1"), name
