"""torchvision-style ResNet names (``conv1``, ``bn1``, ``layer1.0.conv1``, ``downsample.0``) -> gn_det's.

torchvision's ImageNet ResNets and the Switchable Normalization authors' ResNets
(switchablenorms/Switchable-Normalization, models/resnet_v1_sn.py) share this layout; SN names its norms
``sn1``/``sn2``/``sn3`` where torchvision says ``bn1``/``bn2``/``bn3``. Both put the stride in the 3x3
conv (``conv2``), i.e. MODEL.RESNETS.STRIDE_IN_1X1 False.
"""
from __future__ import annotations

import re
from typing import Optional

from .converted import BOTTOM_UP

_STEM = re.compile(r"^(conv1|bn1|sn1)\.(\w+)$")
_BLOCK = re.compile(r"^layer([1-4])\.(\d+)\.(conv[1-3]|bn[1-3]|sn[1-3]|downsample\.[01])\.(\w+)$")


def rename_resnet_key(name: str) -> Optional[str]:
    """gn_det name for a torchvision/SN ResNet key; None for keys with no counterpart (``fc.*``)."""
    m = _STEM.match(name)
    if m:
        layer, param = m.groups()
        return f"{BOTTOM_UP}stem.conv1.{param}" if layer == "conv1" else f"{BOTTOM_UP}stem.conv1.norm.{param}"
    m = _BLOCK.match(name)
    if not m:
        return None
    stage, index, layer, param = m.groups()
    block = f"{BOTTOM_UP}res{int(stage) + 1}.{index}"  # layer1 is C2's res2
    if layer == "downsample.0":
        return f"{block}.shortcut.{param}"
    if layer == "downsample.1":
        return f"{block}.shortcut.norm.{param}"
    if layer.startswith("conv"):
        return f"{block}.{layer}.{param}"
    return f"{block}.conv{layer[-1]}.norm.{param}"  # bnK / snK normalizes convK's output
