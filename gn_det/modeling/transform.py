"""Input handling: torchvision's GeneralizedRCNNTransform with separate train/test sizes and 0-255 pixels."""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import torch
from torchvision.models.detection.transform import GeneralizedRCNNTransform, _resize_image_and_masks, resize_boxes


class RCNNTransform(GeneralizedRCNNTransform):
    """Resize, normalize and batch images as detectron2 does, keeping torchvision's interface.

    Training: shortest edge drawn at random from ``min_size_train`` (INPUT.MIN_SIZE_TRAIN, "choice"),
    longest edge capped at ``max_size_train``; eval: ``min_size_test`` / ``max_size_test``.
    Images arrive as float CHW in 0-255 in INPUT.FORMAT order, so PIXEL_MEAN/STD (same order and
    scale) apply directly. Batches are zero-padded to a multiple of 32 (the FPN's coarsest stride).
    """

    def __init__(self, min_size_train: Sequence[int], max_size_train: int, min_size_test: int, max_size_test: int,
                 pixel_mean: Sequence[float], pixel_std: Sequence[float], size_divisible: int = 32) -> None:
        super().__init__(min_size=tuple(int(s) for s in min_size_train), max_size=int(max_size_train),
                         image_mean=[float(m) for m in pixel_mean], image_std=[float(s) for s in pixel_std],
                         size_divisible=size_divisible)
        self.min_size_test = int(min_size_test)
        self.max_size_test = int(max_size_test)

    def target_size(self) -> Tuple[int, int]:
        """(shortest-edge size, longest-edge cap) for the next image in the current mode."""
        if self.training:
            return int(self.torch_choice(self.min_size)), self.max_size
        return self.min_size_test, self.max_size_test

    def resize(self, image: torch.Tensor, target: Optional[Dict[str, torch.Tensor]] = None):
        """Resize one image (and its boxes/masks) to the mode's size, keeping the aspect ratio."""
        height, width = image.shape[-2:]
        size, max_size = self.target_size()
        image, target = _resize_image_and_masks(image, size, max_size, target, self.fixed_size)
        if target is not None:
            target["boxes"] = resize_boxes(target["boxes"], (height, width), image.shape[-2:])
        return image, target

    def extra_repr(self) -> str:
        return (f"train: shortest edge in {self.min_size}, max {self.max_size}; "
                f"test: shortest edge {self.min_size_test}, max {self.max_size_test}")
