"""Multi-level RoI pooling as detectron2's ROIPooler does it, callable where torchvision's RoIHeads
calls its ``MultiScaleRoIAlign`` (``pooler(features, boxes, image_shapes)``).

Differences from torchvision's MultiScaleRoIAlign that change the numbers: the op is chosen by
POOLER_TYPE (detectron2's default ROIAlignV2 is RoIAlign with ``aligned=True``, the half-pixel shift
of detectron2/layers/roi_align.py; torchvision always uses ``aligned=False``), each level's scale is
1 / its fixed stride (not inferred from the padded image size), and a box goes to level
``floor(4 + log2(sqrt(area) / 224 + 1e-8))`` clamped to the levels given (FPN paper eq. 1, detectron2's
``assign_boxes_to_levels``).
"""
from __future__ import annotations

import math
from typing import Dict, List, Sequence, Tuple

import torch
from torch import nn
from torchvision.ops import roi_pool

from gn_det.layers.roi_align import roi_align

__all__ = ["POOLER_TYPES", "ROIPooler", "assign_boxes_to_levels"]

POOLER_TYPES = ("ROIAlignV2", "ROIAlign", "ROIPool")  # detectron2's names (ROIAlignRotated: rotated boxes only)
CANONICAL_BOX_SIZE, CANONICAL_LEVEL = 224, 4  # FPN paper eq. 1: a 224-pixel box pools from P4


def assign_boxes_to_levels(boxes: torch.Tensor, min_level: int, max_level: int) -> torch.Tensor:
    """Index (0 = ``min_level``) of the pyramid level each x1y1x2y2 box pools from (FPN eq. 1, detectron2's),
    computed in float32 (or wider) whatever the boxes' dtype (a half area overflows past 65504: a 300 x 300 box)."""
    boxes = boxes.to(torch.promote_types(boxes.dtype, torch.float32))
    sizes = torch.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
    levels = torch.floor(CANONICAL_LEVEL + torch.log2(sizes / CANONICAL_BOX_SIZE + 1e-8))
    return torch.clamp(levels, min=min_level, max=max_level).to(torch.int64) - min_level


class ROIPooler(nn.Module):
    """Pool ``output_size`` x ``output_size`` features per box from the levels ``in_features`` (strides ``strides``).

    ``pooler_type``: "ROIAlignV2" (aligned=True), "ROIAlign" (aligned=False) or "ROIPool";
    ``sampling_ratio`` 0 = adaptive (as torchvision's roi_align). Levels must have strides 2**k.
    """

    def __init__(self, in_features: Sequence[str], strides: Sequence[int], output_size: int, sampling_ratio: int,
                 pooler_type: str, key: str = "POOLER_TYPE") -> None:
        super().__init__()
        if pooler_type not in POOLER_TYPES:
            raise ValueError(f"{key}={pooler_type!r} is not a pooler type; use one of {list(POOLER_TYPES)}")
        levels = [math.log2(s) for s in strides]
        consecutive = list(range(int(levels[0]), int(levels[0]) + len(levels)))
        if any(lv != int(lv) for lv in levels) or [int(lv) for lv in levels] != consecutive:
            raise ValueError(f"MODEL.ROI_HEADS.IN_FEATURES {list(in_features)} must be consecutive pyramid levels "
                             f"(strides doubling from one to the next), got strides {list(strides)}")
        self.in_features = list(in_features)
        self.scales = [1.0 / s for s in strides]
        self.min_level, self.max_level = int(levels[0]), int(levels[-1])
        self.output_size = (int(output_size), int(output_size))
        self.sampling_ratio = int(sampling_ratio)
        self.pooler_type = pooler_type

    def _pool(self, x: torch.Tensor, rois: torch.Tensor, scale: float) -> torch.Tensor:
        if x.dtype != rois.dtype:  # half features (autocast, .half()): pool in float32, keep the boxes' precision
            return self._pool(x.float(), rois.float(), scale).to(x.dtype)
        if self.pooler_type == "ROIPool":
            return roi_pool(x, rois, self.output_size, scale)
        return roi_align(x, rois, self.output_size, scale, self.sampling_ratio, aligned=self.pooler_type == "ROIAlignV2")

    def forward(self, features: Dict[str, torch.Tensor], boxes: List[torch.Tensor],
                image_shapes: List[Tuple[int, int]]) -> torch.Tensor:
        """(sum_i R_i, C, S, S) features of every image's boxes, in order; ``image_shapes`` is unused (the
        scales are fixed) and kept for torchvision's RoIHeads, which passes it."""
        missing = [f for f in self.in_features if f not in features]
        if missing:
            raise KeyError(f"MODEL.ROI_HEADS.IN_FEATURES {missing} not in the backbone's outputs {list(features)}")
        maps = [features[f] for f in self.in_features]
        all_boxes = torch.cat(list(boxes)) if boxes else maps[0].new_zeros((0, 4))
        index = torch.cat([torch.full((len(b), 1), i, dtype=all_boxes.dtype, device=all_boxes.device)
                           for i, b in enumerate(boxes)]) if boxes else all_boxes.new_zeros((0, 1))
        rois = torch.cat([index, all_boxes], dim=1)
        if len(maps) == 1:
            return self._pool(maps[0], rois, self.scales[0])
        levels = assign_boxes_to_levels(all_boxes, self.min_level, self.max_level)
        pooled = [self._pool(x, rois[levels == k], scale) for k, (x, scale) in enumerate(zip(maps, self.scales))]
        out = pooled[0].new_zeros((len(rois), maps[0].shape[1]) + self.output_size)
        for k, result in enumerate(pooled):
            out[levels == k] = result.to(out.dtype)
        return out

    def extra_repr(self) -> str:
        return (f"{self.pooler_type}, in_features={self.in_features}, scales={self.scales}, "
                f"output_size={self.output_size}, sampling_ratio={self.sampling_ratio}")
