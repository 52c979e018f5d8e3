"""Input handling inside the model: normalize and pad (torchvision's GeneralizedRCNNTransform without
its resize), and detectron2's post-processing back to each image's original size.

The data loader resizes (gn_det.data: detectron2's ResizeShortestEdge, PIL bilinear on uint8), as in
detectron2; resizing again here on floats would change the numbers a detectron2 checkpoint gives.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from .postprocess import detector_postprocess


class RCNNTransform(GeneralizedRCNNTransform):
    """Normalize with PIXEL_MEAN/STD and zero-pad the batch to a multiple of ``size_divisible`` (32, the
    FPN's coarsest stride), keeping torchvision's interface; images keep the size they arrive at.

    Images are float CHW in 0-255 in INPUT.FORMAT order, so PIXEL_MEAN/STD (same order and scale) apply
    directly. ``postprocess`` maps detections to the sizes given (detectron2's detector_postprocess).
    """

    def __init__(self, pixel_mean: Sequence[float], pixel_std: Sequence[float], size_divisible: int = 32) -> None:
        # min_size/max_size are unused: resize() below keeps each image as it is
        super().__init__(min_size=1, max_size=1, image_mean=[float(m) for m in pixel_mean],
                         image_std=[float(s) for s in pixel_std], size_divisible=size_divisible)

    def resize(self, image: torch.Tensor, target: Optional[Dict[str, torch.Tensor]] = None):
        """No resizing: the loader (or DefaultPredictor) has resized already."""
        return image, target

    def postprocess(self, result: List[Dict[str, torch.Tensor]], image_shapes: List[Tuple[int, int]],
                    original_image_sizes: List[Tuple[int, int]]) -> List[Dict[str, torch.Tensor]]:
        """Eval detections on the ``image_shapes`` the model saw -> ``original_image_sizes`` coordinates."""
        if self.training:
            return result
        return [detector_postprocess(r, shape, size) for r, shape, size in zip(result, image_shapes, original_image_sizes)]

    def extra_repr(self) -> str:
        return f"normalize, pad to a multiple of {self.size_divisible}; no resize (the loader resizes)"
