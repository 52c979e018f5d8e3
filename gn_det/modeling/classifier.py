"""The detection recipes' ResNet as an image classifier, for backbone pretraining.

``BackboneClassifier`` holds the ResNet of MODEL.RESNETS under the detector's own module path,
``backbone.bottom_up``, so a checkpoint of it loads into any detector of the same recipe with
MODEL.WEIGHTS: the norms, convs (plain or WS) and names are built by the same code. The classification
layer is ``pretrain_head``; the weight loader drops it (gn_det.checkpoint.formats).
"""
from __future__ import annotations

from typing import Dict, List, Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

from gn_det.utils.device import resolve_device

from .backbone import build_resnet_backbone

__all__ = ["BackboneClassifier", "build_backbone_classifier", "PRETRAIN_HEAD"]

PRETRAIN_HEAD = "pretrain_head"


class _Backbone(nn.Module):
    """A holder giving the ResNet the detector's path (``backbone.bottom_up``)."""

    def __init__(self, bottom_up: nn.Module) -> None:
        super().__init__()
        self.bottom_up = bottom_up


class BackboneClassifier(nn.Module):
    """ResNet -> global average pool of its last stage -> linear classifier.

    ``forward(images, targets)`` takes what the engine's loop passes (a list of ``(3, H, W)`` float 0-255
    images in INPUT.FORMAT order, a list of ``{"label": ()}`` dicts): in training it returns
    ``{"loss_cls": cross entropy}``; in eval mode (or without targets) the logits ``(N, classes)``.
    """

    def __init__(self, bottom_up: nn.Module, num_classes: int, pixel_mean, pixel_std) -> None:
        super().__init__()
        self.backbone = _Backbone(bottom_up)
        last = bottom_up.stage_names[-1]
        self._last = last
        bottom_up.out_features = [last]
        setattr(self, PRETRAIN_HEAD, nn.Linear(bottom_up._out_feature_channels[last], num_classes))
        head = getattr(self, PRETRAIN_HEAD)
        nn.init.normal_(head.weight, std=0.01)
        nn.init.zeros_(head.bias)
        # not persistent: the checkpoint holds only weights that a detector loads (and the head)
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(-1, 1, 1), False)

    def forward(self, images: Union[torch.Tensor, List[torch.Tensor]],
                targets: Optional[List[Dict[str, torch.Tensor]]] = None):
        x = images if isinstance(images, torch.Tensor) else torch.stack(list(images))
        x = (x - self.pixel_mean) / self.pixel_std
        feature = self.backbone.bottom_up(x)[self._last]
        logits = getattr(self, PRETRAIN_HEAD)(feature.float().mean(dim=(2, 3)))
        if self.training and targets is not None:
            labels = torch.stack([t["label"] for t in targets]).to(logits.device)
            return {"loss_cls": F.cross_entropy(logits.float(), labels)}
        return logits


def build_backbone_classifier(cfg) -> BackboneClassifier:
    """The classifier of ``cfg``: MODEL.RESNETS (norm, conv, depth, FREEZE_AT), PRETRAIN.NUM_CLASSES,
    MODEL.PIXEL_MEAN/STD, on MODEL.DEVICE."""
    if len(cfg.MODEL.PIXEL_MEAN) != 3 or len(cfg.MODEL.PIXEL_STD) != 3:
        raise ValueError("MODEL.PIXEL_MEAN and MODEL.PIXEL_STD need 3 values each (RGB/BGR images)")
    model = BackboneClassifier(build_resnet_backbone(cfg), cfg.PRETRAIN.NUM_CLASSES, cfg.MODEL.PIXEL_MEAN,
                               cfg.MODEL.PIXEL_STD)
    return model.to(resolve_device(cfg.MODEL.DEVICE))
