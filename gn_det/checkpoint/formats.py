"""Recognise which known format a loaded weights file is in and convert it to gn_det's names.

Known formats, in detection order (``KNOWN_FORMATS``): torchvision detectors, gn_det's own checkpoints, detectron2 model-zoo
checkpoints, Detectron (Caffe2) detectors, MSRA Caffe2 ImageNet ResNets (R-50.pkl), FAIR Caffe2 GN
ResNets (R-50-GN.pkl), torchvision ImageNet ResNets, and the SN authors' ImageNet ResNets.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Tuple

import numpy as np
import torch

from . import conventions as conv
from .c2_names import C2_BACKBONE_KEY, C2_HEAD_KEY, rename_c2_key
from .converted import BN, GN, ConvertedWeights, DetectedFormat, InputConvention
from .detectron2_names import rename_detectron2_key, to_torchvision_class_layout
from .detectron2_zoo import detectron2_zoo_convention
from .resnet_names import rename_resnet_key
from .safe_load import WeightsFileError
from .tv_detection_names import rename_tv_detection_key

__all__ = ["KNOWN_FORMATS", "WeightsFormat", "unwrap_checkpoint", "convert_checkpoint"]


@dataclass(frozen=True)
class WeightsFormat:
    """One known format: ``matches(keys, meta)`` recognises it, ``convert(flat, meta, path)`` renames it."""

    name: str
    description: str
    matches: Callable[[List[str], Dict[str, Any]], bool]
    convert: Callable[[Dict[str, torch.Tensor], Dict[str, Any], str], Tuple[ConvertedWeights, Any]]


def _to_tensor(value: Any) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    return torch.from_numpy(np.ascontiguousarray(value))


def unwrap_checkpoint(raw: Any, path: str) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """(flat name -> tensor dict, scalar metadata) from a loaded file's container.

    Containers: ``{"model": sd, ...}`` (gn_det / detectron2 training checkpoints, detectron2 zoo .pkl),
    ``{"state_dict": sd, ...}`` (the SN authors' and many ImageNet scripts), ``{"blobs": ...}`` (Detectron
    detectors) or the state dict itself. A DataParallel ``module.`` prefix is removed.
    """
    if not isinstance(raw, Mapping):
        raise WeightsFileError(f"{path}: holds a {type(raw).__name__}, not a dict of tensors")
    meta: Dict[str, Any] = {}
    flat: Any = raw
    for container in ("model", "state_dict", "blobs"):
        if isinstance(raw.get(container), Mapping):
            flat = raw[container]
            meta = {k: v for k, v in raw.items() if isinstance(v, (str, int, float, bool))}
            if isinstance(raw.get("input_convention"), Mapping):  # written by tools/convert_weights.py
                meta["input_convention"] = dict(raw["input_convention"])
            meta["container"] = container
            break
    tensors = {str(k): _to_tensor(v) for k, v in flat.items() if isinstance(v, (torch.Tensor, np.ndarray))}
    if not tensors:
        raise WeightsFileError(f"{path}: holds no tensors (top-level keys: {sorted(map(str, raw))[:10]})")
    if all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module."):]: v for k, v in tensors.items()}
        meta["stripped_prefix"] = "module."
    return tensors, meta


# ----------------------------------------------------------------------------- recognisers
_OURS_PREFIXES = ("backbone.", "rpn.", "roi_heads.")
# A pretrained backbone (tools/pretrain_backbone.py) holds its classifier here; loading drops it.
PRETRAIN_HEAD_PREFIX = "pretrain_head."
_D2_ONLY = ("proposal_generator.", "roi_heads.mask_head.predictor.", "roi_heads.mask_head.deconv.")


def _is_tv_detection(keys: List[str], meta: Dict[str, Any]) -> bool:
    return any(k.startswith("backbone.body.") for k in keys)


def _is_ours(keys: List[str], meta: Dict[str, Any]) -> bool:
    return all(k.startswith(_OURS_PREFIXES + (PRETRAIN_HEAD_PREFIX,)) for k in keys) and not _is_detectron2(keys, meta)


def _is_detectron2(keys: List[str], meta: Dict[str, Any]) -> bool:
    author = str(meta.get("__author__", ""))
    if any(k.startswith(_D2_ONLY) for k in keys):
        return True
    if any(re.match(r"^(stem|res[2-5])\.", k) for k in keys):  # backbone-only detectron2 file
        return True
    return bool(author) and any(k.startswith("backbone.") for k in keys)  # zoo .pkl: {"model", "__author__"}


def _c2_backbone(keys: List[str]) -> bool:
    return any(C2_BACKBONE_KEY.match(k) for k in keys)


def _is_c2_detector(keys: List[str], meta: Dict[str, Any]) -> bool:
    return any(C2_HEAD_KEY.match(k) for k in keys) and (_c2_backbone(keys) or "rpn_cls_logits_fpn2_w" in keys)


def _is_c2_gn(keys: List[str], meta: Dict[str, Any]) -> bool:
    return _c2_backbone(keys) and any(k.endswith("_gn_s") for k in keys)


def _is_c2_bn(keys: List[str], meta: Dict[str, Any]) -> bool:
    return _c2_backbone(keys) and any(k.endswith("_bn_s") for k in keys)


def _is_torchvision(keys: List[str], meta: Dict[str, Any]) -> bool:
    return "conv1.weight" in keys and "bn1.weight" in keys and any(k.startswith("layer1.") for k in keys)


def _is_sn(keys: List[str], meta: Dict[str, Any]) -> bool:
    return "conv1.weight" in keys and any(k.endswith(".mean_weight") for k in keys) and any(
        k.startswith("layer1.") for k in keys
    )


# ----------------------------------------------------------------------------- converters
def _convert_ours(flat, meta, path):
    recorded = meta.get("input_convention")
    config = os.path.join(os.path.dirname(os.path.abspath(path)), "config.yaml")
    if recorded:
        convention = InputConvention(**{**recorded, "pixel_mean": tuple(recorded["pixel_mean"]),
                                        "pixel_std": tuple(recorded["pixel_std"])})
    elif os.path.isfile(config):
        convention = conv.convention_from_config_file(config)
    else:
        convention = None
    head = sorted(k for k in flat if k.startswith(PRETRAIN_HEAD_PREFIX))
    kept = {k: v for k, v in flat.items() if k not in head}
    converted = ConvertedWeights(kept, {k: k for k in kept})
    if head:
        converted.notes.append(f"a pretrained backbone (tools/pretrain_backbone.py): its classifier "
                               f"({', '.join(head)}) is not part of a detector and was left out")
    return converted, convention


def _backbone_norm_kind(flat: Mapping[str, torch.Tensor], stem_norm: str) -> str:
    return BN if f"{stem_norm}.running_mean" in flat else GN


def _convert_detectron2(flat, meta, path):
    converted = ConvertedWeights.renamed(flat, rename_detectron2_key)
    for key in ("pixel_mean", "pixel_std"):  # old detectron2 files saved these buffers: config, not weights
        converted.tensors.pop(key, None)
    converted.notes.extend(to_torchvision_class_layout(converted.tensors))
    if str(meta.get("__author__", "")).lower() == "torchvision":
        return converted, conv.TORCHVISION
    # what is recorded wins: the zoo recipe of a model-zoo file, else the run's config.yaml beside it
    config = os.path.join(os.path.dirname(os.path.abspath(path)), "config.yaml")
    convention = detectron2_zoo_convention(path) or (
        conv.convention_from_config_file(config, mergeable=False, default_pooler=None) if os.path.isfile(config) else None)
    if convention is None:  # nothing recorded: detectron2's usual pairing of norm and ImageNet weights
        kind = _backbone_norm_kind(converted.tensors, "backbone.bottom_up.stem.conv1.norm")
        base = conv.MSRA_CAFFE2 if kind == BN else conv.FAIR_CAFFE2_GN
        convention = InputConvention(**{**base.__dict__, "pooler_type": "ROIAlignV2", "how_known": (
            "guessed from the checkpoint's norms: no config.yaml beside it and not a known detectron2 model-zoo "
            "file name")})
    return converted, convention


def _convert_tv_detection(flat, meta, path):
    box_convs = len({k.split(".")[2] for k in flat if re.match(r"^roi_heads\.box_head\.\d+\.0\.weight$", k)})
    converted = ConvertedWeights.renamed(flat, lambda k: rename_tv_detection_key(k, box_convs))
    if any(re.match(r"^backbone\.fpn\.inner_blocks\.\d+\.1\.", k) for k in flat):  # v2: BN in FPN/heads
        convention = InputConvention(**{**conv.TORCHVISION.__dict__, "pooler_type": "ROIAlign",
                                        "how_known": "torchvision v2 detector"})
    else:
        convention = conv.TORCHVISION_DETECTION_V1
    return converted, convention


def _convert_c2(flat, meta, path):
    flat = {k: v for k, v in flat.items() if not k.endswith("_momentum")}  # SGD momentum blobs
    kinds: Dict[str, str] = {}

    def rename(name):
        found = rename_c2_key(name)
        if found is None:
            return None
        new, kind = found
        if kind is not None:
            kinds[new.rsplit(".", 1)[0]] = kind
        return new

    converted = ConvertedWeights.renamed(flat, rename)
    converted.norm_kinds.update(kinds)
    gn = any(k.endswith("_gn_s") for k in flat)
    return converted, conv.FAIR_CAFFE2_GN if gn else conv.MSRA_CAFFE2


def _convert_resnet(convention: InputConvention):
    def convert(flat, meta, path):
        return ConvertedWeights.renamed(flat, rename_resnet_key), convention

    return convert


KNOWN_FORMATS: Tuple[WeightsFormat, ...] = (
    WeightsFormat("torchvision-detection", "torchvision detector checkpoint (maskrcnn/fasterrcnn_resnet50_fpn)",
                  _is_tv_detection, _convert_tv_detection),
    WeightsFormat("gn_det", "gn_det checkpoint (model state dict or training checkpoint)", _is_ours, _convert_ours),
    WeightsFormat("detectron2", "detectron2 checkpoint (model zoo .pkl or training .pth)", _is_detectron2,
                  _convert_detectron2),
    WeightsFormat("detectron-c2-detector", "Detectron (Caffe2) detector .pkl", _is_c2_detector, _convert_c2),
    WeightsFormat("fair-c2-gn", "FAIR Caffe2 GN ImageNet ResNet (R-50-GN.pkl style)", _is_c2_gn, _convert_c2),
    WeightsFormat("msra-c2", "MSRA Caffe2 ImageNet ResNet (R-50.pkl style, BN folded to scale/bias)", _is_c2_bn,
                  _convert_c2),
    WeightsFormat("sn-imagenet", "Switchable Normalization authors' ImageNet ResNet", _is_sn,
                  _convert_resnet(conv.SN_IMAGENET)),
    WeightsFormat("torchvision-resnet", "torchvision ImageNet ResNet state dict", _is_torchvision,
                  _convert_resnet(conv.TORCHVISION)),
)


def convert_checkpoint(raw: Any, path: str) -> Tuple[ConvertedWeights, DetectedFormat]:
    """Detect the format of a loaded file and convert it; an unknown format lists the known ones."""
    flat, meta = unwrap_checkpoint(raw, path)
    keys = sorted(flat)
    for fmt in KNOWN_FORMATS:
        if fmt.matches(keys, meta):
            converted, convention = fmt.convert(flat, meta, path)
            if meta.get("stripped_prefix"):
                converted.notes.append(f"removed the '{meta['stripped_prefix']}' prefix (DataParallel)")
            return converted, DetectedFormat(fmt.name, fmt.description, convention)
    known = "\n".join(f"  - {f.name}: {f.description}" for f in KNOWN_FORMATS)
    raise WeightsFileError(
        f"{path}: unrecognised weights format (first keys: {', '.join(keys[:5])}); known formats: "
        f"{', '.join(f.name for f in KNOWN_FORMATS)}\n{known}"
    )
