"""Input conventions of each weights source, and the check that a config agrees with them.

Sources of the numbers:
- MSRA R-50.pkl / R-101.pkl (Caffe2, used by Detectron and detectron2): BGR 0-255 minus the mean, std 1
  (the std is folded into conv1), stride in the 1x1 conv (detectron2 configs/Base-RCNN-FPN.yaml and
  defaults.py: PIXEL_MEAN [103.530, 116.280, 123.675], PIXEL_STD [1, 1, 1], STRIDE_IN_1X1 True).
- FAIR R-50-GN.pkl / R-101-GN.pkl: same pixels (detectron2 configs/Misc/mask_rcnn_R_50_FPN_3x_gn.yaml
  keeps the base's BGR mean/std 1) but the stride in the 3x3 conv (STRIDE_IN_1X1 False there).
- torchvision ImageNet ResNets: RGB, ImageNet mean/std (0.485, 0.456, 0.406) / (0.229, 0.224, 0.225)
  times 255 (torchvision transforms.Normalize in its reference scripts), stride in the 3x3.
- torchvision COCO_V1 detectors (maskrcnn_resnet50_fpn_coco, fasterrcnn_resnet50_fpn_coco): torchvision's
  ImageNet normalization and stride in the 3x3, and FrozenBN with eps 0 (torchvision's model builders call
  overwrite_eps(model, 0.0) for these weights).
- Switchable Normalization authors' ResNets: the same torchvision preprocessing (their main.py Normalize),
  stride in the 3x3 (models/resnet_v1_sn.py).
"""
from __future__ import annotations

import logging
import math
from typing import List, Optional, Sequence, Union

from .converted import DetectedFormat, InputConvention

logger = logging.getLogger(__name__)

_C2_MEAN = (103.530, 116.280, 123.675)  # BGR
_IMAGENET_MEAN_RGB = (123.675, 116.280, 103.530)  # 255 * (0.485, 0.456, 0.406)
_IMAGENET_STD_RGB = (58.395, 57.120, 57.375)  # 255 * (0.229, 0.224, 0.225)

MSRA_CAFFE2 = InputConvention("BGR", _C2_MEAN, (1.0, 1.0, 1.0), True, "FrozenBN", "configs/weights/msra_caffe2.yaml")
FAIR_CAFFE2_GN = InputConvention("BGR", _C2_MEAN, (1.0, 1.0, 1.0), False, "GN", "configs/weights/fair_caffe2_gn.yaml")
TORCHVISION = InputConvention(
    "RGB", _IMAGENET_MEAN_RGB, _IMAGENET_STD_RGB, False, "FrozenBN", "configs/weights/torchvision.yaml"
)
TORCHVISION_DETECTION_V1 = InputConvention(
    "RGB", _IMAGENET_MEAN_RGB, _IMAGENET_STD_RGB, False, "FrozenBN", "configs/weights/torchvision_detection.yaml",
    bn_eps=0.0, pooler_type="ROIAlign",  # torchvision's MultiScaleRoIAlign: aligned=False
)
SN_IMAGENET = InputConvention("RGB", _IMAGENET_MEAN_RGB, _IMAGENET_STD_RGB, False, "SN", "configs/weights/sn_imagenet.yaml")


def _close(a: Sequence[float], b: Sequence[float]) -> bool:
    return len(a) == len(b) and all(math.isclose(x, y, rel_tol=1e-3, abs_tol=1e-3) for x, y in zip(a, b))


def check_input_conventions(cfg, weights_format: Union[DetectedFormat, InputConvention, None]) -> List[str]:
    """Warn (log and return the messages) where cfg disagrees with how the weights were trained.

    Checks INPUT.FORMAT, MODEL.PIXEL_MEAN, MODEL.PIXEL_STD, MODEL.RESNETS.STRIDE_IN_1X1 (and MODEL.BN.EPSILON and
    the RoI heads' POOLER_TYPE where the source fixes them) against the convention of the detected source
    (``LoadReport.format``); an unknown convention checks nothing.
    """
    if isinstance(weights_format, DetectedFormat):
        source, convention = weights_format.description, weights_format.convention
    else:
        source, convention = "the weights", weights_format
    if convention is None:
        return []
    fix = (f"merge {convention.recipe} into your config or set the key to the weights' value" if convention.recipe
           else "set the key to the weights' value")
    found = []
    if str(cfg.INPUT.FORMAT).upper() != convention.input_format:
        found.append(("INPUT.FORMAT", cfg.INPUT.FORMAT, convention.input_format))
    if not _close(cfg.MODEL.PIXEL_MEAN, convention.pixel_mean):
        found.append(("MODEL.PIXEL_MEAN", list(cfg.MODEL.PIXEL_MEAN), list(convention.pixel_mean)))
    if not _close(cfg.MODEL.PIXEL_STD, convention.pixel_std):
        found.append(("MODEL.PIXEL_STD", list(cfg.MODEL.PIXEL_STD), list(convention.pixel_std)))
    stride = convention.stride_in_1x1
    if stride is not None and bool(cfg.MODEL.RESNETS.STRIDE_IN_1X1) != stride:
        found.append(("MODEL.RESNETS.STRIDE_IN_1X1", cfg.MODEL.RESNETS.STRIDE_IN_1X1, stride))
    if convention.bn_eps is not None and not math.isclose(cfg.MODEL.BN.EPSILON, convention.bn_eps, abs_tol=1e-12):
        found.append(("MODEL.BN.EPSILON", cfg.MODEL.BN.EPSILON, convention.bn_eps))
    poolers = {"ROI_BOX_HEAD": convention.pooler_type}  # each head's recorded pooler (the mask's: else the box's)
    if cfg.MODEL.MASK_ON:
        poolers["ROI_MASK_HEAD"] = convention.mask_pooler_type or convention.pooler_type
    found.extend((f"MODEL.{h}.POOLER_TYPE", cfg.MODEL[h].POOLER_TYPE, expected)
                 for h, expected in poolers.items() if expected is not None and cfg.MODEL[h].POOLER_TYPE != expected)
    messages = [
        f"{key}={value!r} disagrees with MODEL.WEIGHTS ({source}; {convention.how_known}): "
        f"they expect {key}={expected!r}; {fix}"
        for key, value, expected in found
    ]
    for message in messages:
        logger.warning(message)
    return messages


def convention_from_config_file(path: str, *, mergeable: bool = True,
                                default_pooler: Optional[str] = "ROIAlign") -> Optional[InputConvention]:
    """The convention recorded in an OUTPUT_DIR's config.yaml (gn_det's or detectron2's: same key names),
    or None when there is none or it does not record these keys. ``mergeable``: the file can be merged
    into a gn_det config (the warning then suggests it). ``default_pooler``: the pooler of a config.yaml
    without ROI_BOX_HEAD.POOLER_TYPE (gn_det wrote none before the key existed and pooled with
    torchvision's aligned=False RoIAlign); ROI_MASK_HEAD.POOLER_TYPE is read where recorded (else the box
    head's is checked for the mask head too)."""
    import yaml

    try:
        with open(path) as f:
            data = yaml.safe_load(f) or {}
        model, inp = data.get("MODEL", {}), data.get("INPUT", {})
        return InputConvention(
            input_format=str(inp["FORMAT"]).upper(),
            pixel_mean=tuple(float(x) for x in model["PIXEL_MEAN"]),
            pixel_std=tuple(float(x) for x in model["PIXEL_STD"]),
            stride_in_1x1=bool(model.get("RESNETS", {})["STRIDE_IN_1X1"]),
            norm=str(model.get("RESNETS", {}).get("NORM", "")),
            recipe=path if mergeable else "",
            how_known=f"recorded in {path}",
            pooler_type=(model.get("ROI_BOX_HEAD") or {}).get("POOLER_TYPE", default_pooler),
            mask_pooler_type=(model.get("ROI_MASK_HEAD") or {}).get("POOLER_TYPE"),
        )
    except (OSError, KeyError, TypeError, ValueError, AttributeError, yaml.YAMLError):
        return None
