"""The detectors: torchvision's FasterRCNN / MaskRCNN assembled from gn_det's backbone, RPN and heads."""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import torch
from torch import nn
from torchvision.models.detection import FasterRCNN, MaskRCNN
from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN as _TorchvisionGeneralizedRCNN

from .anchors import feature_strides
from .registry import BACKBONE_REGISTRY, META_ARCH_REGISTRY
from .roi_heads import build_roi_heads
from .rpn import build_rpn
from .transform import RCNNTransform


class _Assembled:
    """Mixin: build from ready parts instead of torchvision's constructor (which builds its own parts).

    torchvision's FasterRCNN/MaskRCNN __init__ only creates defaults and then calls
    GeneralizedRCNN.__init__(backbone, rpn, roi_heads, transform); we call the latter directly with
    the parts the config built, so the result is a true FasterRCNN/MaskRCNN with torchvision's forward.
    """

    def __init__(self, backbone: nn.Module, rpn: nn.Module, roi_heads: nn.Module, transform: nn.Module) -> None:
        _TorchvisionGeneralizedRCNN.__init__(self, backbone, rpn, roi_heads, transform)

    def forward(self, images: List[torch.Tensor], targets: Optional[List[Dict[str, torch.Tensor]]] = None,
                original_sizes: Optional[Sequence[Sequence[int]]] = None):
        """Training: torchvision's ``model(images, targets)`` -> dict of losses. Eval: per image the detections
        in the coordinates of ``original_sizes`` ((height, width) per image, e.g. the size before the loader
        resized it: detectron2's "height"/"width"), or of the images as given when omitted."""
        if self.training:
            return self._losses(images, targets)
        sizes = [tuple(img.shape[-2:]) for img in images] if original_sizes is None else list(original_sizes)
        if len(sizes) != len(images):
            raise ValueError(f"original_sizes has {len(sizes)} entries for {len(images)} images; give one "
                             "(height, width) per image")
        image_list, _ = self.transform(images)
        features = self.backbone(image_list.tensors)
        proposals, _ = self.rpn(image_list, features)
        detections, _ = self.roi_heads(features, proposals, image_list.image_sizes)
        return self.transform.postprocess(detections, image_list.image_sizes,
                                          [(int(h), int(w)) for h, w in sizes])


    def _losses(self, images: List[torch.Tensor], targets: Optional[List[Dict[str, torch.Tensor]]]) -> Dict[str, torch.Tensor]:
        """torchvision's training forward (same parts, same loss order) without its per-image host read of
        ``degenerate_boxes.any()``: one device-side assert for all images (``torch._assert_async``: raises at
        once on the CPU, reported asynchronously on CUDA), so a step reads nothing back before its logging."""
        if targets is None:
            raise ValueError("targets are needed in training mode (model.train()); call model.eval() to predict")
        for t in targets:
            boxes = t.get("boxes")
            if not isinstance(boxes, torch.Tensor) or boxes.dim() != 2 or boxes.shape[-1] != 4:
                raise ValueError(f"target boxes should be a tensor of shape [N, 4], got "
                                 f"{getattr(boxes, 'shape', type(boxes).__name__)}")
        image_list, targets = self.transform(images, targets)
        boxes = torch.cat([t["boxes"] for t in targets])
        if boxes.numel():
            torch._assert_async((boxes[:, 2:] > boxes[:, :2]).all(),
                                "All bounding boxes should have positive height and width (x2 > x1, y2 > y1)")
        features = self.backbone(image_list.tensors)
        proposals, proposal_losses = self.rpn(image_list, features, targets)
        _, detector_losses = self.roi_heads(features, proposals, image_list.image_sizes, targets)
        return {**detector_losses, **proposal_losses}


class GNFasterRCNN(_Assembled, FasterRCNN):
    """torchvision FasterRCNN built from config parts (gn_det backbone, RPN head, box head)."""


class GNMaskRCNN(_Assembled, MaskRCNN):
    """torchvision MaskRCNN built from config parts (gn_det backbone, RPN head, box and mask heads)."""


def build_transform(cfg) -> RCNNTransform:
    """The normalize/pad step of MODEL.PIXEL_MEAN/STD (the loader resizes, per INPUT.*)."""
    if cfg.INPUT.FORMAT not in ("BGR", "RGB"):
        raise ValueError(f"INPUT.FORMAT must be 'BGR' or 'RGB', got {cfg.INPUT.FORMAT!r}")
    for key in ("PIXEL_MEAN", "PIXEL_STD"):
        if len(cfg.MODEL[key]) != 3:
            raise ValueError(f"MODEL.{key} needs 3 values (one per channel, INPUT.FORMAT order), got {cfg.MODEL[key]}")
    return RCNNTransform(cfg.MODEL.PIXEL_MEAN, cfg.MODEL.PIXEL_STD)


@META_ARCH_REGISTRY.register("GeneralizedRCNN")
def build_generalized_rcnn(cfg) -> FasterRCNN:
    """Faster R-CNN, or Mask R-CNN with MODEL.MASK_ON: backbone of MODEL.BACKBONE.NAME, RPN, RoI heads."""
    backbone = BACKBONE_REGISTRY.get(cfg.MODEL.BACKBONE.NAME, key="MODEL.BACKBONE.NAME")(cfg)
    if not isinstance(getattr(backbone, "out_channels", None), int):
        raise TypeError(f"Backbone {cfg.MODEL.BACKBONE.NAME!r} must have an int attribute out_channels "
                        "(see BACKBONE_REGISTRY's contract)")
    rpn = build_rpn(cfg, backbone.out_channels, feature_strides(backbone, cfg.MODEL.RPN.IN_FEATURES,
                                                                "MODEL.RPN.IN_FEATURES"))
    roi_heads = build_roi_heads(cfg, backbone.out_channels, feature_strides(backbone, cfg.MODEL.ROI_HEADS.IN_FEATURES,
                                                                            "MODEL.ROI_HEADS.IN_FEATURES"))
    model_class = GNMaskRCNN if cfg.MODEL.MASK_ON else GNFasterRCNN
    return model_class(backbone, rpn, roi_heads, build_transform(cfg))
