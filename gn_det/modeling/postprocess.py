"""Detections in the original image's coordinates, as detectron2's ``detector_postprocess`` gives them:
boxes scaled by output size / input size per axis, clipped, empty ones dropped, and each mask pasted
into the full image by sampling it at every pixel centre the box covers (detectron2's paste, so that
the same mask logits give the same masks).
"""
from __future__ import annotations

import math
from typing import Dict, Sequence

import torch
import torch.nn.functional as F

__all__ = ["paste_masks_in_image", "detector_postprocess"]


def paste_masks_in_image(masks: torch.Tensor, boxes: torch.Tensor, image_shape: Sequence[int]) -> torch.Tensor:
    """(R, M, M) mask probabilities placed by their x1y1x2y2 ``boxes`` into (R, H, W) float32 images.

    Pixel (x, y) of mask i takes the bilinear sample (zero outside the mask) of masks[i] at
    ``((x + 0.5 - x1) / (x2 - x1), (y + 0.5 - y1) / (y2 - y1))`` in mask units; only the pixels within
    one pixel of the box are sampled, the rest are 0 (detectron2's _do_paste_mask with skip_empty).
    Thresholded at 0.5 this equals detectron2's ``paste_masks_in_image``.
    """
    height, width = int(image_shape[0]), int(image_shape[1])
    out = torch.zeros((len(masks), height, width), dtype=torch.float32, device=masks.device)
    if len(masks) == 0:
        return out
    bounds = boxes.detach().to("cpu", torch.float32).tolist()  # one host read for all boxes (not 4 per mask)
    masks = masks.to(torch.float32)
    boxes = boxes.to(torch.float32)
    for i in range(len(masks)):
        x0_int = max(int(math.floor(bounds[i][0])) - 1, 0)
        y0_int = max(int(math.floor(bounds[i][1])) - 1, 0)
        x1_int = min(int(math.ceil(bounds[i][2])) + 1, width)
        y1_int = min(int(math.ceil(bounds[i][3])) + 1, height)
        if x1_int <= x0_int or y1_int <= y0_int:
            continue
        x0, y0, x1, y1 = boxes[i, 0], boxes[i, 1], boxes[i, 2], boxes[i, 3]
        img_y = torch.arange(y0_int, y1_int, device=masks.device, dtype=torch.float32) + 0.5
        img_x = torch.arange(x0_int, x1_int, device=masks.device, dtype=torch.float32) + 0.5
        img_y = (img_y - y0) / (y1 - y0) * 2 - 1  # grid_sample's [-1, 1] spans the mask's outer edges
        img_x = (img_x - x0) / (x1 - x0) * 2 - 1
        grid = torch.stack(torch.meshgrid(img_y, img_x, indexing="ij")[::-1], dim=-1)
        sampled = F.grid_sample(masks[i][None, None], grid[None], mode="bilinear", padding_mode="zeros",
                                align_corners=False)
        out[i, y0_int:y1_int, x0_int:x1_int] = sampled[0, 0]
    return out


def detector_postprocess(result: Dict[str, torch.Tensor], input_size: Sequence[int],
                         output_size: Sequence[int]) -> Dict[str, torch.Tensor]:
    """One image's detections on the ``input_size`` (h, w) image the model saw, mapped to ``output_size``.

    Boxes are scaled by output / input per axis, clipped to the output image, and detections whose box
    is then empty are dropped (every field); "masks" (R, 1, M, M) become (R, 1, H, W) pasted probabilities.
    """
    out_h, out_w = int(output_size[0]), int(output_size[1])
    scale_x, scale_y = out_w / int(input_size[1]), out_h / int(input_size[0])
    boxes = result["boxes"].clone()
    boxes[:, 0::2] *= scale_x
    boxes[:, 1::2] *= scale_y
    boxes = torch.stack([boxes[:, 0].clamp(min=0, max=out_w), boxes[:, 1].clamp(min=0, max=out_h),
                         boxes[:, 2].clamp(min=0, max=out_w), boxes[:, 3].clamp(min=0, max=out_h)], dim=-1)
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    out = {k: v[keep] for k, v in result.items() if k not in ("boxes", "masks")}
    out["boxes"] = boxes[keep]
    if "masks" in result:
        out["masks"] = paste_masks_in_image(result["masks"][keep][:, 0], out["boxes"], (out_h, out_w))[:, None]
    return out
