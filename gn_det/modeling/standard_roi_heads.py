"""``StandardROIHeads``: torchvision's RoIHeads with mask targets cropped where the mask pooler samples.

torchvision crops each ground-truth mask to its RoI with ``roi_align(aligned=False)``, matching its own
``aligned=False`` pooler. With detectron2's default ROIAlignV2 pooler (``aligned=True``) those targets
sit half a pixel off the features the mask head sees, which costs mask AP at the strict IoU thresholds.
Here the targets are cropped with the mask pooler's own alignment: ``aligned=True`` for ROIAlignV2
(detectron2's box-to-grid mapping, as in its ``BitMasks.crop_and_resize``), torchvision's ``aligned=False``
for ROIAlign and ROIPool. The targets stay soft (bilinear values in [0, 1], unthresholded) as torchvision's
loss uses them; detectron2 thresholds its crop at 0.5 (binary targets), which is not done here.
Sampling, matching, the box losses, post-processing and mask inference are torchvision's.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torchvision.models.detection.roi_heads import RoIHeads, fastrcnn_loss, maskrcnn_inference
from torchvision.ops import roi_align

__all__ = ["StandardROIHeads", "mask_rcnn_loss", "mask_targets"]


def mask_targets(gt_masks: torch.Tensor, boxes: torch.Tensor, matched_idxs: torch.Tensor, size: int,
                 aligned: bool) -> torch.Tensor:
    """(R, size, size) soft targets: ground-truth mask ``matched_idxs[r]`` bilinearly sampled in box r
    (x1y1x2y2 in image pixels), ``aligned`` as the mask pooler (True: ROIAlignV2's half-pixel shift, the
    mapping of detectron2's crop_and_resize); not thresholded (detectron2's are, at 0.5; torchvision's are not)."""
    rois = torch.cat([matched_idxs.to(boxes)[:, None], boxes], dim=1)
    return roi_align(gt_masks[:, None].to(rois), rois, (size, size), 1.0, aligned=aligned)[:, 0]


def mask_rcnn_loss(mask_logits: torch.Tensor, proposals: List[torch.Tensor], gt_masks: List[torch.Tensor],
                   gt_labels: List[torch.Tensor], matched_idxs: List[torch.Tensor], aligned: bool) -> torch.Tensor:
    """Mean per-pixel binary cross-entropy of each positive RoI's ground-truth class logits against its
    target (Mask R-CNN's L_mask); 0 connected to the graph when there is no positive RoI (so synced norms
    and DDP see every process take part)."""
    size = mask_logits.shape[-1]
    labels = torch.cat([gt[idx] for gt, idx in zip(gt_labels, matched_idxs)])
    targets = torch.cat([mask_targets(m, p, i, size, aligned) for m, p, i in zip(gt_masks, proposals, matched_idxs)])
    if targets.numel() == 0:
        return mask_logits.sum() * 0
    picked = mask_logits[torch.arange(labels.shape[0], device=labels.device), labels]
    return F.binary_cross_entropy_with_logits(picked, targets.to(picked.dtype))


class StandardROIHeads(RoIHeads):
    """torchvision's RoIHeads (box and mask branches) with ``mask_targets_aligned`` mask targets (above)."""

    def __init__(self, *args, mask_targets_aligned: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.mask_targets_aligned = mask_targets_aligned

    def forward(self, features: Dict[str, torch.Tensor], proposals: List[torch.Tensor],
                image_shapes: List[Tuple[int, int]], targets: Optional[List[Dict[str, torch.Tensor]]] = None):
        """Training: ``([], losses)``; eval: ``(detections per image, {})``, as torchvision's RoIHeads."""
        if self.has_keypoint():
            raise NotImplementedError("gn_det's StandardROIHeads has box and mask branches only")
        matched_idxs = labels = None
        if self.training:
            if targets is None:
                raise ValueError("StandardROIHeads needs targets in training")
            proposals, matched_idxs, labels, regression_targets = self.select_training_samples(proposals, targets)
        class_logits, box_regression = self.box_predictor(self.box_head(self.box_roi_pool(features, proposals,
                                                                                           image_shapes)))
        result: List[Dict[str, torch.Tensor]] = []
        losses: Dict[str, torch.Tensor] = {}
        if self.training:
            loss_classifier, loss_box_reg = fastrcnn_loss(class_logits, box_regression, labels, regression_targets)
            losses = {"loss_classifier": loss_classifier, "loss_box_reg": loss_box_reg}
        else:
            boxes, scores, labels = self.postprocess_detections(class_logits, box_regression, proposals, image_shapes)
            result = [{"boxes": b, "labels": lab, "scores": s} for b, s, lab in zip(boxes, scores, labels)]
        if self.has_mask():
            if self.training:  # positive RoIs only, with the ground truth each was matched to
                positive = [torch.where(lab > 0)[0] for lab in labels]
                mask_proposals = [p[pos] for p, pos in zip(proposals, positive)]
                pos_matched = [m[pos] for m, pos in zip(matched_idxs, positive)]
            else:
                mask_proposals = [r["boxes"] for r in result]
            mask_logits = self.mask_predictor(self.mask_head(self.mask_roi_pool(features, mask_proposals,
                                                                                image_shapes)))
            if self.training:
                losses["loss_mask"] = mask_rcnn_loss(mask_logits, mask_proposals, [t["masks"] for t in targets],
                                                     [t["labels"] for t in targets], pos_matched,
                                                     self.mask_targets_aligned)
            else:
                for probs, r in zip(maskrcnn_inference(mask_logits, [r["labels"] for r in result]), result):
                    r["masks"] = probs
        return result, losses
