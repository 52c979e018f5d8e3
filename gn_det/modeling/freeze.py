"""Freezing a part of the network the way detectron2 does: no gradient, and frozen norm statistics."""
from __future__ import annotations

from torch import nn

from gn_det.layers import freeze_norms


def freeze_module(module: nn.Module) -> nn.Module:
    """Return ``module`` frozen: no parameter takes a gradient and every norm is frozen too.

    Norms go through gn_det.layers.freeze_norms (BN/SyncBN -> FrozenBN, SN statistics frozen, affine
    without gradient), so a frozen stage's statistics do not drift in training whatever the norm
    (torchvision's freezing by requires_grad alone leaves BN running stats updating).
    """
    for param in module.parameters():
        param.requires_grad_(False)
    return freeze_norms(module)
