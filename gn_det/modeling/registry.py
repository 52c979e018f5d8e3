"""The modeling registries: a user registers a builder with a decorator and names it in YAML."""
from gn_det.utils.registry import Registry

BACKBONE_REGISTRY = Registry("BACKBONE")
BACKBONE_REGISTRY.__doc__ = """
Backbones, selected by MODEL.BACKBONE.NAME. A builder is ``builder(cfg) -> nn.Module`` whose module
has ``.out_channels`` (int, the same for every level) and whose ``forward(images: Tensor)`` returns an
OrderedDict of feature maps named as in MODEL.RPN.IN_FEATURES / MODEL.ROI_HEADS.IN_FEATURES
(p2..p6 for the FPN), finest first. The anchor generator expects one map per ANCHOR_GENERATOR.SIZES entry.
"""

ROI_BOX_HEAD_REGISTRY = Registry("ROI_BOX_HEAD")
ROI_BOX_HEAD_REGISTRY.__doc__ = """
RoI box heads, selected by MODEL.ROI_BOX_HEAD.NAME. A builder is ``builder(cfg, in_channels: int,
resolution: int) -> nn.Module`` taking pooled features (R, in_channels, resolution, resolution) to
(R, module.out_features); the box predictor (class scores, box deltas) is added on top.
"""

ROI_MASK_HEAD_REGISTRY = Registry("ROI_MASK_HEAD")
ROI_MASK_HEAD_REGISTRY.__doc__ = """
RoI mask heads, selected by MODEL.ROI_MASK_HEAD.NAME. A builder is ``builder(cfg, in_channels: int)
-> nn.Module`` taking pooled features (R, in_channels, S, S) to (R, module.out_channels, S, S); the
mask predictor (2x deconv, per-class 1x1 conv) is added on top.
"""

META_ARCH_REGISTRY = Registry("META_ARCH")
META_ARCH_REGISTRY.__doc__ = """
Whole detectors, selected by MODEL.META_ARCHITECTURE. A builder is ``builder(cfg) -> nn.Module`` with
torchvision's calling convention: ``model(images, targets)`` -> dict of losses in training,
``model(images, original_sizes=None)`` -> list of per-image result dicts in eval, in the pixels of
``original_sizes`` ((height, width) per image; inference_on_dataset passes the dataset's) when given.
Images arrive resized by the loader.
"""
