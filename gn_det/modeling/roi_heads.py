"""RoI heads: the box head (NUM_CONV convs + NUM_FC fcs) and mask head (NUM_CONV convs) with norms,
their predictors, and torchvision's RoIHeads (matching, sampling, losses, post-processing) around them
(StandardROIHeads: mask targets cropped as the mask pooler samples features)."""
from __future__ import annotations

from typing import List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import Conv2d, ConvFn, NormFn, c2_msra_fill, c2_xavier_fill, conv_fn, norm_fn
from .poolers import ROIPooler
from .registry import ROI_BOX_HEAD_REGISTRY, ROI_MASK_HEAD_REGISTRY
from .rpn import split_iou_thresholds
from .standard_roi_heads import StandardROIHeads


def add_conv_stack(module: nn.Module, prefix: str, in_channels: int, dims: List[int], norm: NormFn,
                   conv: ConvFn = Conv2d) -> int:
    """Add ``<prefix>1..n``: 3x3 convs (MSRA fill) each followed by its norm and ReLU; return the output channels.

    A norm that includes its activation (FRN+TLU, EvoNorm) replaces norm + ReLU.
    """
    channels = in_channels
    for k, dim in enumerate(dims, start=1):
        layer = conv(channels, dim, 3, padding=1, norm=norm(dim, act=True), activation=F.relu)
        c2_msra_fill(layer)
        module.add_module(f"{prefix}{k}", layer)
        channels = dim
    return channels


class FastRCNNConvFCHead(nn.Module):
    """``conv1..n`` (3x3, norm, ReLU) then ``fc1..m`` (ReLU): the GN paper's 4conv1fc or the classic 2fc."""

    def __init__(self, in_channels: int, resolution: int, *, conv_dims: List[int], fc_dims: List[int], norm: NormFn,
                 conv: ConvFn = Conv2d) -> None:
        super().__init__()
        channels = add_conv_stack(self, "conv", in_channels, conv_dims, norm, conv)
        self.num_conv, self.num_fc = len(conv_dims), len(fc_dims)
        features = channels * resolution * resolution
        for k, dim in enumerate(fc_dims, start=1):
            fc = nn.Linear(features, dim)
            c2_xavier_fill(fc)
            self.add_module(f"fc{k}", fc)
            features = dim
        self.out_features = features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(R, C, S, S) pooled features -> (R, out_features)."""
        for k in range(1, self.num_conv + 1):
            x = getattr(self, f"conv{k}")(x)
        x = torch.flatten(x, start_dim=1)
        for k in range(1, self.num_fc + 1):
            x = F.relu(getattr(self, f"fc{k}")(x))
        return x


@ROI_BOX_HEAD_REGISTRY.register("FastRCNNConvFCHead")
def build_fast_rcnn_conv_fc_head(cfg, in_channels: int, resolution: int) -> FastRCNNConvFCHead:
    """Box head of MODEL.ROI_BOX_HEAD (NUM_CONV x CONV_DIM convs with NORM, NUM_FC x FC_DIM fcs)."""
    h = cfg.MODEL.ROI_BOX_HEAD
    if h.NUM_CONV + h.NUM_FC == 0:
        raise ValueError("MODEL.ROI_BOX_HEAD needs NUM_CONV + NUM_FC >= 1 (4 + 1 for 4conv1fc, 0 + 2 for 2fc)")
    return FastRCNNConvFCHead(in_channels, resolution, conv_dims=[h.CONV_DIM] * h.NUM_CONV, fc_dims=[h.FC_DIM] * h.NUM_FC,
                              norm=norm_fn(h.NORM, cfg, "MODEL.ROI_BOX_HEAD.NORM"),
                              conv=conv_fn(h.CONV, "MODEL.ROI_BOX_HEAD.CONV"))


class BoxPredictor(nn.Module):
    """``cls_score`` (K+1 logits, background at 0) and class-specific ``bbox_pred`` ((K+1)*4), torchvision's layout.

    Init as detectron2's FastRCNNOutputLayers: normal std 0.01 (scores) and 0.001 (deltas), bias 0.
    """

    def __init__(self, in_features: int, num_classes: int) -> None:
        super().__init__()
        self.cls_score = nn.Linear(in_features, num_classes + 1)
        self.bbox_pred = nn.Linear(in_features, (num_classes + 1) * 4)
        for layer, std in ((self.cls_score, 0.01), (self.bbox_pred, 0.001)):
            nn.init.normal_(layer.weight, std=std)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor):
        """(R, F) -> class logits (R, K+1), box deltas (R, (K+1)*4), float32 (or wider) also under autocast (the
        detections are decoded in the deltas' dtype; detectron2 decodes in float32, as RPNHead)."""
        x = x.flatten(start_dim=1)
        scores, deltas = self.cls_score(x), self.bbox_pred(x)
        wide = torch.promote_types(deltas.dtype, torch.float32)  # half (autocast) -> float32; float64 kept
        return scores.to(wide), deltas.to(wide)


class MaskRCNNConvUpsampleHead(nn.Module):
    """``mask_fcn1..n``: 3x3 convs with norm and ReLU on the pooled RoI features (predictor apart)."""

    def __init__(self, in_channels: int, *, conv_dims: List[int], norm: NormFn, conv: ConvFn = Conv2d) -> None:
        super().__init__()
        channels = add_conv_stack(self, "mask_fcn", in_channels, conv_dims, norm, conv)
        self.num_conv = len(conv_dims)
        self.out_channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(R, C, S, S) -> (R, out_channels, S, S)."""
        for k in range(1, self.num_conv + 1):
            x = getattr(self, f"mask_fcn{k}")(x)
        return x


@ROI_MASK_HEAD_REGISTRY.register("MaskRCNNConvUpsampleHead")
def build_mask_rcnn_conv_upsample_head(cfg, in_channels: int) -> MaskRCNNConvUpsampleHead:
    """Mask head of MODEL.ROI_MASK_HEAD (NUM_CONV x CONV_DIM convs with NORM)."""
    h = cfg.MODEL.ROI_MASK_HEAD
    return MaskRCNNConvUpsampleHead(in_channels, conv_dims=[h.CONV_DIM] * h.NUM_CONV,
                                    norm=norm_fn(h.NORM, cfg, "MODEL.ROI_MASK_HEAD.NORM"),
                                    conv=conv_fn(h.CONV, "MODEL.ROI_MASK_HEAD.CONV"))


class MaskPredictor(nn.Module):
    """2x ``deconv`` + ReLU, then the 1x1 ``predictor`` with one mask logit map per class (K+1, bg at 0)."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.deconv = nn.ConvTranspose2d(in_channels, in_channels, 2, stride=2)
        self.predictor = nn.Conv2d(in_channels, num_classes + 1, 1)
        c2_msra_fill(self.deconv)
        nn.init.normal_(self.predictor.weight, std=0.001)  # detectron2's mask predictor init
        nn.init.zeros_(self.predictor.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(R, C, S, S) -> (R, K+1, 2S, 2S) mask logits."""
        return self.predictor(F.relu(self.deconv(x)))


def _pooler(cfg, head: str, strides: Sequence[int]) -> ROIPooler:
    """The MODEL.<head>.POOLER_TYPE pooler over MODEL.ROI_HEADS.IN_FEATURES (strides ``strides``)."""
    h = cfg.MODEL[head]
    return ROIPooler(cfg.MODEL.ROI_HEADS.IN_FEATURES, strides, h.POOLER_RESOLUTION, h.POOLER_SAMPLING_RATIO,
                     h.POOLER_TYPE, key=f"MODEL.{head}.POOLER_TYPE")


def build_roi_heads(cfg, in_channels: int, strides: Sequence[int]) -> StandardROIHeads:
    """torchvision's RoIHeads with MODEL.ROI_HEADS thresholds, the registered box (and mask) heads,
    detectron2's poolers over MODEL.ROI_HEADS.IN_FEATURES (strides ``strides``) and mask targets cropped
    with the mask pooler's alignment."""
    r, box = cfg.MODEL.ROI_HEADS, cfg.MODEL.ROI_BOX_HEAD
    if r.NAME != "StandardROIHeads":
        raise ValueError(f"MODEL.ROI_HEADS.NAME must be 'StandardROIHeads' (torchvision's RoIHeads; choose the heads "
                         f"with MODEL.ROI_BOX_HEAD.NAME / MODEL.ROI_MASK_HEAD.NAME), got {r.NAME!r}")
    box_head = ROI_BOX_HEAD_REGISTRY.get(box.NAME, key="MODEL.ROI_BOX_HEAD.NAME")(cfg, in_channels, box.POOLER_RESOLUTION)
    mask_pool: Optional[nn.Module] = None
    mask_head: Optional[nn.Module] = None
    mask_predictor: Optional[nn.Module] = None
    if cfg.MODEL.MASK_ON:
        m = cfg.MODEL.ROI_MASK_HEAD
        mask_pool = _pooler(cfg, "ROI_MASK_HEAD", strides)
        mask_head = ROI_MASK_HEAD_REGISTRY.get(m.NAME, key="MODEL.ROI_MASK_HEAD.NAME")(cfg, in_channels)
        mask_predictor = MaskPredictor(mask_head.out_channels, r.NUM_CLASSES)
    bg_thresh, fg_thresh = split_iou_thresholds(r.IOU_THRESHOLDS, "MODEL.ROI_HEADS.IOU_THRESHOLDS")
    return StandardROIHeads(
        _pooler(cfg, "ROI_BOX_HEAD", strides), box_head,
        BoxPredictor(box_head.out_features, r.NUM_CLASSES),
        fg_iou_thresh=fg_thresh, bg_iou_thresh=bg_thresh, batch_size_per_image=r.BATCH_SIZE_PER_IMAGE,
        positive_fraction=r.POSITIVE_FRACTION, bbox_reg_weights=tuple(box.BBOX_REG_WEIGHTS),
        score_thresh=r.SCORE_THRESH_TEST, nms_thresh=r.NMS_THRESH_TEST, detections_per_img=r.DETECTIONS_PER_IMAGE,
        mask_roi_pool=mask_pool, mask_head=mask_head, mask_predictor=mask_predictor,
        mask_targets_aligned=cfg.MODEL.ROI_MASK_HEAD.POOLER_TYPE == "ROIAlignV2",
    )
