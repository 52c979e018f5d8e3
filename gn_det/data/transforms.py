"""Geometric transforms of the loader: detectron2's shortest-edge resize and the horizontal flip.

The resize is detectron2's ResizeShortestEdge + ResizeTransform: the short side goes to the drawn
length, the long side is capped at ``max_size``, each side is rounded with ``int(x + 0.5)``, and
uint8 images are resampled by PIL's bilinear filter (masks by nearest neighbour, polygons and boxes
by scaling their coordinates by new size / old size per axis). The model does not resize again.
Images are HxWxC arrays here (flip: CxHxW tensors), boxes (N,4) x1y1x2y2 in pixels, masks (N,H,W).
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

__all__ = ["hflip", "hflip_boxes", "shortest_edge_size", "resize_image", "resize_mask", "scale_polygons",
           "ResizeShortestEdge"]

SAMPLE_STYLES = ("choice", "range")


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
    `max_size` (0 = no limit), rounded with int(x + 0.5): detectron2's ResizeShortestEdge.get_output_shape.
    `short` 0 keeps the size (detectron2's NoOpTransform)."""
    if short == 0:
        return height, width
    size = float(short)
    scale = size / min(height, width)
    new_h, new_w = (size, scale * width) if height < width else (scale * height, size)
    if max_size > 0 and max(new_h, new_w) > max_size:
        shrink = max_size * 1.0 / max(new_h, new_w)
        new_h, new_w = new_h * shrink, new_w * shrink
    return int(new_h + 0.5), int(new_w + 0.5)


def resize_image(image: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """HxW[xC] image -> size (h, w): uint8 by PIL's bilinear filter, other dtypes by bilinear
    interpolation (align_corners=False), as detectron2's ResizeTransform.apply_image."""
    new_h, new_w = int(size[0]), int(size[1])
    if image.shape[:2] == (new_h, new_w):
        return image
    if image.dtype == np.uint8:
        squeeze = image.ndim == 3 and image.shape[2] == 1
        pil = Image.fromarray(image[:, :, 0] if squeeze else np.ascontiguousarray(image))
        out = np.asarray(pil.resize((new_w, new_h), Image.BILINEAR))
        return out[:, :, None] if squeeze else out
    tensor = torch.from_numpy(np.ascontiguousarray(image)).to(torch.float32)
    chw = tensor.permute(2, 0, 1)[None] if image.ndim == 3 else tensor[None, None]
    out = F.interpolate(chw, size=(new_h, new_w), mode="bilinear", align_corners=False)
    out = out[0].permute(1, 2, 0) if image.ndim == 3 else out[0, 0]
    return out.numpy().astype(image.dtype)


def resize_mask(mask: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """HxW uint8 mask -> size (h, w) by nearest neighbour (PIL, detectron2's apply_segmentation)."""
    new_h, new_w = int(size[0]), int(size[1])
    if mask.shape[:2] == (new_h, new_w):
        return mask
    return np.asarray(Image.fromarray(np.ascontiguousarray(mask)).resize((new_w, new_h), Image.NEAREST))


def scale_polygons(polygons: Sequence[Sequence[float]], scale_x: float, scale_y: float) -> List[List[float]]:
    """COCO polygons [x0, y0, x1, y1, ...] with x scaled by `scale_x` and y by `scale_y`."""
    out = []
    for poly in polygons:
        p = np.asarray(poly, dtype=np.float64).reshape(-1, 2) * np.array([scale_x, scale_y])
        out.append(p.reshape(-1).tolist())
    return out


class ResizeShortestEdge:
    """detectron2's ResizeShortestEdge: short side drawn from `short_edge_length` ("choice": one of the
    values; "range": an integer uniformly in [min, max]), long side capped at `max_size` (0 = no cap)."""

    def __init__(self, short_edge_length: Sequence[int] | int, max_size: int = 0,
                 sample_style: str = "choice") -> None:
        if isinstance(short_edge_length, int):
            short_edge_length = (short_edge_length,)
        short_edge_length = tuple(int(s) for s in short_edge_length)
        if sample_style not in SAMPLE_STYLES:
            raise ValueError(f"sample_style should be 'choice' or 'range', got {sample_style!r}")
        if sample_style == "range" and len(short_edge_length) != 2:
            raise ValueError(f"sample_style='range' needs (min, max), got {short_edge_length}")
        if not short_edge_length or min(short_edge_length) < 0:
            raise ValueError(f"short_edge_length must be sizes >= 0 (0 = no resize), got {short_edge_length}")
        self.short_edge_length, self.max_size, self.sample_style = short_edge_length, int(max_size), sample_style

    @classmethod
    def from_config(cls, cfg, is_train: bool) -> "ResizeShortestEdge":
        """Training: INPUT.MIN_SIZE_TRAIN / MIN_SIZE_TRAIN_SAMPLING / MAX_SIZE_TRAIN; eval: MIN/MAX_SIZE_TEST."""
        i = cfg.INPUT
        if not is_train:
            return cls((int(i.MIN_SIZE_TEST),), i.MAX_SIZE_TEST)
        sizes = (i.MIN_SIZE_TRAIN,) if isinstance(i.MIN_SIZE_TRAIN, int) else tuple(i.MIN_SIZE_TRAIN)
        if i.MIN_SIZE_TRAIN_SAMPLING not in SAMPLE_STYLES:
            raise ValueError(f"INPUT.MIN_SIZE_TRAIN_SAMPLING must be one of {list(SAMPLE_STYLES)}, "
                             f"got {i.MIN_SIZE_TRAIN_SAMPLING!r}")
        if i.MIN_SIZE_TRAIN_SAMPLING == "range" and len(sizes) != 2:
            raise ValueError(f"INPUT.MIN_SIZE_TRAIN_SAMPLING='range' needs INPUT.MIN_SIZE_TRAIN=(min, max), got {sizes}")
        return cls(sizes, i.MAX_SIZE_TRAIN, i.MIN_SIZE_TRAIN_SAMPLING)

    def sample_size(self, rng: Optional[np.random.Generator] = None) -> int:
        """Draw the short side length from `rng` (a numpy Generator; default a fresh one)."""
        rng = rng if rng is not None else np.random.default_rng()
        if self.sample_style == "range":
            return int(rng.integers(self.short_edge_length[0], self.short_edge_length[1] + 1))
        return self.short_edge_length[int(rng.integers(len(self.short_edge_length)))]

    def output_size(self, height: int, width: int, short: Optional[int] = None) -> Tuple[int, int]:
        """(h, w) of a `height` x `width` image resized to short side `short` (default: the first length)."""
        return shortest_edge_size(height, width, self.short_edge_length[0] if short is None else short, self.max_size)

    def __repr__(self) -> str:
        return (f"ResizeShortestEdge(short_edge_length={self.short_edge_length}, max_size={self.max_size}, "
                f"sample_style={self.sample_style!r})")
