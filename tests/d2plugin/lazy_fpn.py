"""A detectron2 LazyConfig (Python config) of a ResNet-18 FPN whose ``norm=`` the tests set."""
from detectron2.config import LazyCall as L
from detectron2.modeling.backbone import FPN, BasicStem, ResNet
from detectron2.modeling.backbone.fpn import LastLevelMaxPool

model = L(FPN)(
    bottom_up=L(ResNet)(
        stem=L(BasicStem)(in_channels=3, out_channels=64, norm="GN"),
        stages=L(ResNet.make_default_stages)(depth=18, norm="GN"),
        out_features=["res2", "res3", "res4", "res5"],
    ),
    in_features=["res2", "res3", "res4", "res5"],
    out_channels=64,
    norm="GN",
    top_block=L(LastLevelMaxPool)(),
)
