"""Group module names (docs/INTERFACES.md, detectron2 naming) into the stages the plots show."""
from __future__ import annotations

import re

_RES_STAGE = re.compile(r"(?:^|\.)(stem|res[2-5])(?:\.|$)")


def stage_of(name: str) -> str:
    """"stem", "res2".."res5", "fpn", "rpn", "box_head", "mask_head", or the first two name parts."""
    match = _RES_STAGE.search(name)
    if match:
        return match.group(1)
    if name.startswith("backbone.fpn_") or ".fpn" in name:
        return "fpn"
    if name.startswith("rpn."):
        return "rpn"
    if name.startswith("roi_heads.box_head"):
        return "box_head"
    if name.startswith("roi_heads.mask_head"):
        return "mask_head"
    return ".".join(name.split(".")[:2]) or "model"
