"""Drawing instances on an image: masks filled at about 0.5 alpha in a distinct colour per instance
(largest first, so small objects stay visible on top), box outlines, and ``class NN%`` labels on a
filled tag above each box (inside the image), in a font sized for the image so they stay readable on
small objects. Pure numpy for the masks (each instance blended in turn, as detectron2's Visualizer
does) and PIL (torchvision's drawing backend) for boxes and text, with matplotlib's DejaVu Sans.
"""
from __future__ import annotations

import colorsys
import functools
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageFont

MASK_ALPHA = 0.5

__all__ = ["MASK_ALPHA", "Instances", "instance_colors", "draw_instances", "side_by_side", "label_font_size"]


@dataclass
class Instances:
    """What to draw on one image: boxes x1y1x2y2 in its pixels, optional HxW boolean masks, a label each."""

    boxes: np.ndarray  # (N, 4) float
    labels: List[str] = field(default_factory=list)
    masks: Optional[np.ndarray] = None  # (N, H, W) bool

    def __len__(self) -> int:
        return len(self.boxes)

    def areas(self) -> np.ndarray:
        """Each instance's mask area (box area without masks), to draw the largest first."""
        if self.masks is not None and len(self.masks):
            return self.masks.reshape(len(self.masks), -1).sum(1).astype(np.float64)
        b = np.asarray(self.boxes, dtype=np.float64).reshape(-1, 4)
        return (b[:, 2] - b[:, 0]).clip(min=0) * (b[:, 3] - b[:, 1]).clip(min=0)


def instance_colors(n: int) -> List[Tuple[int, int, int]]:
    """``n`` distinct, saturated RGB colours (hues stepped by the golden ratio, so neighbours differ)."""
    out = []
    for i in range(n):
        r, g, b = colorsys.hsv_to_rgb((0.13 + i * 0.618033988749895) % 1.0, 0.75, 0.95)
        out.append((int(r * 255), int(g * 255), int(b * 255)))
    return out


@functools.lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.FreeTypeFont:
    from matplotlib import font_manager

    return ImageFont.truetype(font_manager.findfont(font_manager.FontProperties(family="DejaVu Sans")), size)


def label_font_size(height: int, width: int) -> int:
    """Label font size in pixels for an image: 3.5% of its short side, between 9 and 16."""
    return int(np.clip(round(0.035 * min(height, width)), 9, 16))


def _text_color(rgb: Tuple[int, int, int]) -> Tuple[int, int, int]:
    """Black on light tags, white on dark ones (ITU-R BT.601 luma)."""
    return (0, 0, 0) if 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2] > 140 else (255, 255, 255)


def _blend_masks(image: np.ndarray, masks: np.ndarray, colors: Sequence[Tuple[int, int, int]],
                 alpha: float) -> np.ndarray:
    """``image`` (HxWx3 uint8) with each mask blended in its colour, in the given order."""
    out = image.astype(np.float32)
    for mask, color in zip(masks, colors):
        out[mask] = out[mask] * (1 - alpha) + np.asarray(color, np.float32) * alpha
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def draw_instances(image: np.ndarray, instances: Instances, alpha: float = MASK_ALPHA) -> np.ndarray:
    """An RGB copy of ``image`` (HxWx3 uint8, RGB) with ``instances`` drawn; ``image`` itself is untouched."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"draw_instances takes an HxWx3 uint8 RGB image, got {image.dtype} {image.shape}")
    n = len(instances)
    if n == 0:
        return image.copy()
    order = np.argsort(-instances.areas(), kind="stable")
    colors = instance_colors(n)  # by drawing rank: the largest gets the first colour
    out = image.copy()
    if instances.masks is not None:
        out = _blend_masks(out, instances.masks[order].astype(bool), colors, alpha)
    h, w = out.shape[:2]
    canvas = Image.fromarray(out)
    draw = ImageDraw.Draw(canvas)
    font = _font(label_font_size(h, w))
    line = 1 if min(h, w) < 400 else 2
    boxes = np.asarray(instances.boxes, dtype=np.float64).reshape(-1, 4)
    for rank, i in enumerate(order):
        x1, y1, x2, y2 = boxes[i]
        draw.rectangle([x1, y1, max(x1, x2 - 1), max(y1, y2 - 1)], outline=colors[rank], width=line)
    for rank, i in enumerate(order):  # labels last, so no box or mask covers a label
        if i < len(instances.labels) and instances.labels[i]:
            _draw_label(draw, font, instances.labels[i], boxes[i], colors[rank], (w, h))
    return np.asarray(canvas)


def _draw_label(draw: ImageDraw.ImageDraw, font, text: str, box: np.ndarray, color, size: Tuple[int, int]) -> None:
    """A filled tag with ``text`` just above ``box`` (below its top edge when there is no room), kept inside the image."""
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    tw, th = right - left + 2, bottom - top + 2
    x = float(np.clip(box[0], 0, max(0, size[0] - tw)))
    y = box[1] - th if box[1] - th >= 0 else box[1]
    y = float(np.clip(y, 0, max(0, size[1] - th)))
    draw.rectangle([x, y, x + tw - 1, y + th - 1], fill=color)
    draw.text((x + 1 - left, y + 1 - top), text, fill=_text_color(color), font=font)


def side_by_side(left: np.ndarray, right: np.ndarray, gap: int = 4) -> np.ndarray:
    """Two HxWx3 images next to each other on a white strip (heights may differ)."""
    h = max(left.shape[0], right.shape[0])
    out = np.full((h, left.shape[1] + gap + right.shape[1], 3), 255, dtype=np.uint8)
    out[:left.shape[0], :left.shape[1]] = left
    out[:right.shape[0], left.shape[1] + gap:] = right
    return out
