"""Registries and builders that turn a config into torchvision's Faster/Mask R-CNN with the chosen norms."""
from .backbone import FPN, ResNet, build_resnet_backbone, build_resnet_fpn_backbone
from .build import build_model
from .describe import describe_model_parts, format_parts_table
from .blocks import Conv2d
from .meta_arch import GNFasterRCNN, GNMaskRCNN, build_generalized_rcnn
from .registry import BACKBONE_REGISTRY, META_ARCH_REGISTRY, ROI_BOX_HEAD_REGISTRY, ROI_MASK_HEAD_REGISTRY
from .roi_heads import BoxPredictor, FastRCNNConvFCHead, MaskPredictor, MaskRCNNConvUpsampleHead
from .rpn import RPNHead
from .transform import RCNNTransform

__all__ = [
    "BACKBONE_REGISTRY", "META_ARCH_REGISTRY", "ROI_BOX_HEAD_REGISTRY", "ROI_MASK_HEAD_REGISTRY",
    "BoxPredictor", "Conv2d", "FPN", "FastRCNNConvFCHead", "GNFasterRCNN", "GNMaskRCNN", "MaskPredictor",
    "MaskRCNNConvUpsampleHead", "RCNNTransform", "RPNHead", "ResNet", "build_generalized_rcnn", "build_model",
    "build_resnet_backbone", "build_resnet_fpn_backbone", "describe_model_parts", "format_parts_table",
]
