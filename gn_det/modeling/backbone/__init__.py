"""Backbones: ResNet/ResNeXt (``bottom_up``) and FPN; registered in BACKBONE_REGISTRY."""
from .fpn import FPN, build_resnet_fpn_backbone
from .resnet import BasicBlock, BasicStem, BottleneckBlock, ResNet, build_resnet_backbone

__all__ = ["FPN", "BasicBlock", "BasicStem", "BottleneckBlock", "ResNet", "build_resnet_backbone",
           "build_resnet_fpn_backbone"]
