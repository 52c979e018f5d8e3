"""Geometric transforms on (image, boxes, masks): horizontal flip and shortest-edge resize.

The training loader flips; resizing is the model's job (its GeneralizedRCNNTransform), but
`ResizeShortestEdge` and `resize_shortest_edge` are here for tools that need detectron2's resize.
Images are CxHxW tensors, boxes (N,4) x1y1x2y2 in pixels, masks (N,H,W).
"""
from __future__ import annotations

import random
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

__all__ = ["hflip", "hflip_boxes", "shortest_edge_size", "resize_shortest_edge", "ResizeShortestEdge"]


def hflip_boxes(boxes: torch.Tensor, width: int) -> torch.Tensor:
    """Mirror x1y1x2y2 boxes in an image `width` pixels wide: x1' = W - x2, x2' = W - x1."""
    out = boxes.clone()
    out[:, 0] = width - boxes[:, 2]
    out[:, 2] = width - boxes[:, 0]
    return out


def hflip(image: torch.Tensor, boxes: Optional[torch.Tensor] = None,
          masks: Optional[torch.Tensor] = None):
    """Flip a CxHxW image (and its boxes and NxHxW masks) left to right; returns the same tuple."""
    width = image.shape[-1]
    image = image.flip(-1)
    boxes = None if boxes is None else hflip_boxes(boxes, width)
    masks = None if masks is None else masks.flip(-1)
    return image, boxes, masks


def shortest_edge_size(height: int, width: int, short: int, max_size: int) -> Tuple[int, int]:
    """Output (h, w) with the short side scaled to `short`, then shrunk so the long side is at most
    `max_size` (0 = no limit); rounded to integers as detectron2's ResizeShortestEdge does."""
    scale = short / min(height, width)
    new_h, new_w = height * scale, width * scale
    if max_size > 0 and max(new_h, new_w) > max_size:
        shrink = max_size / max(new_h, new_w)
        new_h, new_w = new_h * shrink, new_w * shrink
    return int(new_h + 0.5), int(new_w + 0.5)


def resize_shortest_edge(image: torch.Tensor, short: int, max_size: int,
                         boxes: Optional[torch.Tensor] = None, masks: Optional[torch.Tensor] = None):
    """Resize a CxHxW image bilinearly (boxes scaled, NxHxW masks by nearest neighbour) so its short
    side is `short` and its long side at most `max_size`; returns (image, boxes, masks)."""
    h, w = image.shape[-2:]
    new_h, new_w = shortest_edge_size(h, w, short, max_size)
    out = F.interpolate(image[None].float(), size=(new_h, new_w), mode="bilinear",
                        align_corners=False)[0].to(image.dtype)
    if boxes is not None:
        scale = torch.tensor([new_w / w, new_h / h, new_w / w, new_h / h], dtype=boxes.dtype)
        boxes = boxes * scale
    if masks is not None and masks.numel() > 0:
        masks = F.interpolate(masks[None].float(), size=(new_h, new_w), mode="nearest")[0].to(masks.dtype)
    elif masks is not None:
        masks = masks.new_zeros((masks.shape[0], new_h, new_w))
    return out, boxes, masks


class ResizeShortestEdge:
    """detectron2's ResizeShortestEdge: short side drawn from `short_edge_length` ("choice": one
    of the values; "range": uniform integer in [min, max]), long side capped at `max_size`."""

    def __init__(self, short_edge_length: Sequence[int] | int, max_size: int = 0,
                 sample_style: str = "choice") -> None:
        if isinstance(short_edge_length, int):
            short_edge_length = (short_edge_length,)
        short_edge_length = tuple(int(s) for s in short_edge_length)
        if sample_style not in ("choice", "range"):
            raise ValueError(f"sample_style should be 'choice' or 'range', got {sample_style!r}")
        if sample_style == "range" and len(short_edge_length) != 2:
            raise ValueError(f"sample_style='range' needs (min, max), got {short_edge_length}")
        if not short_edge_length or min(short_edge_length) <= 0:
            raise ValueError(f"short_edge_length must be positive sizes, got {short_edge_length}")
        self.short_edge_length, self.max_size, self.sample_style = short_edge_length, max_size, sample_style

    def sample_size(self, rng: Optional[random.Random] = None) -> int:
        """Draw the short side length (from `rng`, default Python's global random)."""
        rng = rng or random
        if self.sample_style == "range":
            return rng.randint(self.short_edge_length[0], self.short_edge_length[1])
        return self.short_edge_length[rng.randrange(len(self.short_edge_length))]

    def __call__(self, image: torch.Tensor, boxes: Optional[torch.Tensor] = None,
                 masks: Optional[torch.Tensor] = None, rng: Optional[random.Random] = None):
        """Resize image/boxes/masks with a freshly drawn short side; returns (image, boxes, masks)."""
        return resize_shortest_edge(image, self.sample_size(rng), self.max_size, boxes, masks)

    def __repr__(self) -> str:
        return (f"ResizeShortestEdge(short_edge_length={self.short_edge_length}, max_size={self.max_size}, "
                f"sample_style={self.sample_style!r})")
