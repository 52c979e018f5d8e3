"""Anchors as detectron2's DefaultAnchorGenerator makes them, behind torchvision's AnchorGenerator interface.

torchvision's generator rounds each cell anchor to whole pixels and infers a level's stride as
padded image size // feature size, which is wrong for P6 whenever a padded side is an odd multiple
of 32 (an 800-pixel side gives a 13-cell P6 and stride 61 instead of 64). Here cell anchors are
exact (``w = sqrt(size**2 / ratio)``, ``h = ratio * w``, centred at 0) and each level has the fixed
stride of its feature map, so a detectron2 checkpoint's RPN sees the anchors it was trained with.
"""
from __future__ import annotations

import math
import re
from typing import List, Mapping, Sequence

import torch
from torch import nn
from torchvision.models.detection.image_list import ImageList

__all__ = ["generate_cell_anchors", "DefaultAnchorGenerator", "feature_strides", "build_anchor_generator"]


def generate_cell_anchors(sizes: Sequence[float], aspect_ratios: Sequence[float]) -> torch.Tensor:
    """(len(sizes) * len(aspect_ratios), 4) x1y1x2y2 anchors centred at 0: size-major, ratio (h/w) minor;
    area size**2, computed in double and stored in float32 (detectron2's generate_cell_anchors)."""
    anchors = []
    for size in sizes:
        for ratio in aspect_ratios:
            w = math.sqrt(float(size) ** 2 / float(ratio))
            h = float(ratio) * w
            anchors.append([-w / 2.0, -h / 2.0, w / 2.0, h / 2.0])
    return torch.tensor(anchors, dtype=torch.float64).to(torch.float32)


class DefaultAnchorGenerator(nn.Module):
    """Per level ``i``: the cell anchors of ``sizes[i]`` x ``aspect_ratios[i]`` shifted to every feature-map
    location ``((x + offset) * strides[i], (y + offset) * strides[i])``.

    ``forward(image_list, features)`` returns one (sum_i H_i * W_i * A, 4) float32 tensor per image
    (location-major, anchor-minor; levels concatenated), the layout torchvision's RPN expects.
    """

    def __init__(self, sizes: Sequence[Sequence[float]], aspect_ratios: Sequence[Sequence[float]],
                 strides: Sequence[int], offset: float = 0.0) -> None:
        super().__init__()
        if not len(sizes) == len(aspect_ratios) == len(strides):
            raise ValueError(f"anchor sizes ({len(sizes)} levels), aspect ratios ({len(aspect_ratios)}) and strides "
                             f"({len(strides)}) must have one entry per feature level")
        if not 0.0 <= offset < 1.0:
            raise ValueError(f"MODEL.ANCHOR_GENERATOR.OFFSET should be in [0, 1), got {offset}")
        self.strides = [int(s) for s in strides]
        self.offset = float(offset)
        self.sizes = [tuple(float(s) for s in level) for level in sizes]
        self.aspect_ratios = [tuple(float(r) for r in level) for level in aspect_ratios]
        for i, (s, r) in enumerate(zip(self.sizes, self.aspect_ratios)):  # non-persistent: not in state_dict
            self.register_buffer(f"cell_anchors_{i}", generate_cell_anchors(s, r), persistent=False)

    @property
    def cell_anchors(self) -> List[torch.Tensor]:
        """One (A_i, 4) tensor per level."""
        return [getattr(self, f"cell_anchors_{i}") for i in range(len(self.strides))]

    def num_anchors_per_location(self) -> List[int]:
        """Anchors per feature-map location, per level (torchvision's AnchorGenerator method)."""
        return [len(s) * len(r) for s, r in zip(self.sizes, self.aspect_ratios)]

    def grid_anchors(self, grid_sizes: Sequence[Sequence[int]], device: torch.device) -> List[torch.Tensor]:
        """Per level, the (H * W * A, 4) anchors of an H x W feature map (row-major locations)."""
        if len(grid_sizes) != len(self.strides):
            raise ValueError(f"the anchor generator has {len(self.strides)} levels (MODEL.ANCHOR_GENERATOR.SIZES) "
                             f"but got {len(grid_sizes)} feature maps (MODEL.RPN.IN_FEATURES)")
        out = []
        for (height, width), stride, cell in zip(grid_sizes, self.strides, self.cell_anchors):
            xs = (torch.arange(int(width), dtype=torch.float32, device=device) + self.offset) * stride
            ys = (torch.arange(int(height), dtype=torch.float32, device=device) + self.offset) * stride
            shift_y, shift_x = torch.meshgrid(ys, xs, indexing="ij")
            shifts = torch.stack([shift_x, shift_y, shift_x, shift_y], dim=-1).reshape(-1, 1, 4)
            out.append((shifts + cell.to(device).view(1, -1, 4)).reshape(-1, 4))
        return out

    def forward(self, image_list: ImageList, feature_maps: List[torch.Tensor]) -> List[torch.Tensor]:
        """Anchors of the batch's feature maps, one float32 copy per image (all images share the padded size)."""
        grid_sizes = [tuple(f.shape[-2:]) for f in feature_maps]
        anchors = torch.cat(self.grid_anchors(grid_sizes, feature_maps[0].device))
        return [anchors for _ in range(len(image_list.image_sizes))]

    def extra_repr(self) -> str:
        return f"sizes={self.sizes}, aspect_ratios={self.aspect_ratios}, strides={self.strides}, offset={self.offset}"


def feature_strides(backbone: nn.Module, names: Sequence[str], key: str) -> List[int]:
    """Stride (input pixels per cell) of each named backbone output.

    Read from ``backbone._out_feature_strides`` (detectron2's Backbone attribute) when the backbone has
    it, else from detectron2's pyramid naming (``p<k>`` has stride 2**k, ``res<k>`` 2**k).
    """
    known: Mapping[str, int] = getattr(backbone, "_out_feature_strides", None) or {}
    strides = []
    for name in names:
        match = re.fullmatch(r"(?:p|res)(\d+)", name)
        if name in known:
            strides.append(int(known[name]))
        elif match:
            strides.append(2 ** int(match[1]))
        else:
            raise ValueError(f"{key} names {name!r}, whose stride is unknown: name pyramid levels p<k> (stride "
                             "2**k) or give the backbone a dict attribute _out_feature_strides")
    return strides


def build_anchor_generator(cfg, strides: Sequence[int]) -> DefaultAnchorGenerator:
    """Anchors of MODEL.ANCHOR_GENERATOR for the levels of MODEL.RPN.IN_FEATURES, whose strides are given:
    SIZES and ASPECT_RATIOS (h/w) per level, or one list repeated for every level (detectron2's
    _broadcast_params); OFFSET."""
    a = cfg.MODEL.ANCHOR_GENERATOR
    sizes = [tuple(float(s) for s in level) for level in a.SIZES]
    ratios = [tuple(float(r) for r in level) for level in a.ASPECT_RATIOS]
    num_levels = len(cfg.MODEL.RPN.IN_FEATURES)
    if len(sizes) == 1:
        sizes = sizes * num_levels
    if len(sizes) != num_levels:
        raise ValueError(f"MODEL.ANCHOR_GENERATOR.SIZES has {len(sizes)} levels but MODEL.RPN.IN_FEATURES has "
                         f"{num_levels} ({list(cfg.MODEL.RPN.IN_FEATURES)}); give one list of sizes per level "
                         "or one list for all levels")
    if len(ratios) == 1:
        ratios = ratios * num_levels
    if len(ratios) != num_levels:
        raise ValueError(f"MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS must have 1 or {num_levels} lists, got {len(ratios)}")
    per_location = {len(s) * len(r) for s, r in zip(sizes, ratios)}
    if len(per_location) != 1:
        raise ValueError("MODEL.ANCHOR_GENERATOR: every level needs the same number of anchors per location "
                         f"(len(SIZES[i]) * len(ASPECT_RATIOS[i])), got {sorted(per_location)}")
    return DefaultAnchorGenerator(sizes, ratios, strides, a.OFFSET)
