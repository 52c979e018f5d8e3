"""Guess the model config a converted checkpoint fits (depth, widths, norms, heads, classes), for tools
that must build a model from a weights file alone (tools/convert_weights.py without --config-file and
without the run's config.yaml beside the file)."""
from __future__ import annotations

import math
import re
from typing import List, Optional

from gn_det.layers import NORM_REGISTRY

from .converted import BN, BN_FOLDED, GN, SN, SN_NO_BN, ConvertedWeights, DetectedFormat
from .matching import checkpoint_norm_kind

# The norm to build for a checkpoint kind where several registered norms share it (BN statistics are
# loaded frozen, as detectron2 does for pretrained weights); other kinds: the first registered norm of
# that kind. Batch-free SN also needs MODEL.SN.USE_BN False (added by infer_cfg_overrides).
_PREFERRED_NORM = {BN: "FrozenBN", BN_FOLDED: "FrozenBN", GN: "GN", SN: "SN", SN_NO_BN: "SN"}
_DEPTHS = {(True, 6): 50, (True, 23): 101, (True, 36): 152, (False, 6): 34, (False, 2): 18}


def norm_for_kind(kind: str) -> Optional[str]:
    """A registered norm name whose layers hold checkpoint kind ``kind``, or None."""
    if kind in _PREFERRED_NORM:
        return _PREFERRED_NORM[kind]
    for entry in NORM_REGISTRY.entries():
        if entry.traits_for(entry.default_options()).kind == kind:
            return entry.name
    return None


def _kind_of(weights: ConvertedWeights, module: str) -> Optional[str]:
    leaves = {k[len(module) + 1:] for k in weights.tensors if k.startswith(module + ".")}
    if not leaves:
        return None
    return weights.norm_kinds.get(module) or checkpoint_norm_kind(leaves)


def _count(weights: ConvertedWeights, pattern: str) -> int:
    regex = re.compile(pattern)
    return len({m.group(1) for k in weights.tensors for m in [regex.match(k)] if m})


def infer_cfg_overrides(weights: ConvertedWeights, fmt: DetectedFormat) -> List[str]:
    """``KEY VALUE`` overrides (for ``cfg.merge_from_list``) describing the architecture in ``weights``."""
    t, bu = weights.tensors, "backbone.bottom_up."
    out: List[str] = []
    res4 = _count(weights, rf"^{re.escape(bu)}res4\.(\d+)\.conv1\.weight$")
    bottleneck = any(k.startswith(f"{bu}res2.0.conv3.") for k in t)
    if (bottleneck, res4) in _DEPTHS:
        out += ["MODEL.RESNETS.DEPTH", _DEPTHS[(bottleneck, res4)]]
    out += _widths(weights, bottleneck)
    batch_free_sn = False
    for key, module in (("MODEL.RESNETS.NORM", f"{bu}stem.conv1.norm"), ("MODEL.FPN.NORM", "backbone.fpn_lateral2.norm"),
                        ("MODEL.ROI_BOX_HEAD.NORM", "roi_heads.box_head.conv1.norm"),
                        ("MODEL.ROI_MASK_HEAD.NORM", "roi_heads.mask_head.mask_fcn1.norm")):
        kind = _kind_of(weights, module)
        norm = norm_for_kind(kind) if kind is not None else None
        if norm is not None:
            out += [key, norm]
            batch_free_sn = batch_free_sn or kind == SN_NO_BN
    if batch_free_sn:
        out += ["MODEL.SN.USE_BN", False]
    num_conv = _count(weights, r"^roi_heads\.box_head\.conv(\d+)\.weight$")
    num_fc = _count(weights, r"^roi_heads\.box_head\.fc(\d+)\.weight$")
    if num_conv or num_fc:
        out += ["MODEL.ROI_BOX_HEAD.NUM_CONV", num_conv, "MODEL.ROI_BOX_HEAD.NUM_FC", num_fc]
    out += _head_widths(weights, num_conv)
    cls = t.get("roi_heads.box_predictor.cls_score.weight")
    if cls is not None:
        out += ["MODEL.ROI_HEADS.NUM_CLASSES", cls.shape[0] - 1]
    if any(k.startswith("roi_heads.mask_") for k in t):
        out += ["MODEL.MASK_ON", True,
                "MODEL.ROI_MASK_HEAD.NUM_CONV", _count(weights, r"^roi_heads\.mask_head\.mask_fcn(\d+)\.weight$")]
    gn_widths = [int(t[f"{m}.weight"].shape[0]) for m in _gn_modules(weights)]
    if gn_widths:  # groups do not change shapes; pick a count every GN layer of the file can take
        out += ["MODEL.GN.NUM_GROUPS", math.gcd(32, *gn_widths)]
    convention = fmt.convention
    if convention is not None and convention.stride_in_1x1 is not None:
        out += ["MODEL.RESNETS.STRIDE_IN_1X1", convention.stride_in_1x1, "INPUT.FORMAT", convention.input_format,
                "MODEL.PIXEL_MEAN", list(convention.pixel_mean), "MODEL.PIXEL_STD", list(convention.pixel_std)]
    return out


def _out_channels(weights: ConvertedWeights, key: str) -> Optional[int]:
    tensor = weights.tensors.get(key)
    return int(tensor.shape[0]) if tensor is not None else None


def _widths(weights: ConvertedWeights, bottleneck: bool) -> List:
    """Stem, res2 and FPN widths (and ResNeXt groups) from the first convs' output channels."""
    t, bu, out = weights.tensors, "backbone.bottom_up.", []
    stem = _out_channels(weights, f"{bu}stem.conv1.weight")
    if stem is not None:
        out += ["MODEL.RESNETS.STEM_OUT_CHANNELS", stem]
    res2 = _out_channels(weights, f"{bu}res2.0.conv3.weight" if bottleneck else f"{bu}res2.0.conv2.weight")
    if res2 is not None:
        out += ["MODEL.RESNETS.RES2_OUT_CHANNELS", res2]
    conv2 = t.get(f"{bu}res2.0.conv2.weight")
    if conv2 is not None and bottleneck:
        groups = conv2.shape[0] // conv2.shape[1]
        out += ["MODEL.RESNETS.NUM_GROUPS", groups, "MODEL.RESNETS.WIDTH_PER_GROUP", conv2.shape[0] // groups]
    fpn = _out_channels(weights, "backbone.fpn_output2.weight")
    if fpn is not None:
        out += ["MODEL.FPN.OUT_CHANNELS", fpn]
    return out


def _head_widths(weights: ConvertedWeights, num_conv: int) -> List:
    """Box-head conv/fc widths and pooler resolution, mask-head conv width."""
    t, out = weights.tensors, []
    box_conv = _out_channels(weights, "roi_heads.box_head.conv1.weight")
    if box_conv is not None:
        out += ["MODEL.ROI_BOX_HEAD.CONV_DIM", box_conv]
    fc1 = t.get("roi_heads.box_head.fc1.weight")
    if fc1 is not None:
        out += ["MODEL.ROI_BOX_HEAD.FC_DIM", int(fc1.shape[0])]
        channels = box_conv if num_conv else _out_channels(weights, "backbone.fpn_output2.weight")
        if channels:
            side = round((fc1.shape[1] / channels) ** 0.5)
            if side * side * channels == fc1.shape[1]:
                out += ["MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION", side]
    mask_conv = _out_channels(weights, "roi_heads.mask_head.mask_fcn1.weight")
    if mask_conv is None:
        mask_conv = _out_channels(weights, "roi_heads.mask_predictor.deconv.weight")
    if mask_conv is not None:
        out += ["MODEL.ROI_MASK_HEAD.CONV_DIM", mask_conv]
    return out


def _gn_modules(weights: ConvertedWeights) -> List[str]:
    """Norm modules of the file that hold GroupNorm parameters (no running statistics)."""
    modules = {k.rsplit(".", 1)[0] for k in weights.tensors if k.endswith(".norm.weight")}
    return [m for m in modules if _kind_of(weights, m) == GN]
