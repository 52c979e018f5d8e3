"""``build_model(cfg)``: the detector named by MODEL.META_ARCHITECTURE, on MODEL.DEVICE (resolved: "auto"
is this process's GPU when CUDA is present, else the CPU)."""
from __future__ import annotations

from torch import nn

from gn_det.utils.device import resolve_device

from .registry import META_ARCH_REGISTRY


def build_model(cfg) -> nn.Module:
    """Build the MODEL.META_ARCHITECTURE detector from ``cfg`` (random init; weights load separately)."""
    builder = META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE, key="MODEL.META_ARCHITECTURE")
    model = builder(cfg)
    return model.to(resolve_device(cfg.MODEL.DEVICE))
