"""Write a gn_det-named state dict in each foreign format, from the formats' documented naming.

Deliberately independent of gn_det.checkpoint (the code under test): each writer spells out the
source's convention (torchvision's resnet.py, the SN authors' resnet_v1_sn.py and main.py, Detectron's
blob names, detectron2's module names and class layout) by hand.
"""
from __future__ import annotations

import pickle
import re
from typing import Dict

import numpy as np
import torch

BU = "backbone.bottom_up."
_TV_BLOCK = re.compile(r"^res(\d)\.(\d+)\.(conv\d|shortcut)(\.norm)?\.(\w+)$")


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy().copy()


def bottom_up_only(sd: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    return {k[len(BU):]: v for k, v in sd.items() if k.startswith(BU)}


def to_torchvision(sd, norm_word="bn"):
    """torchvision resnet: conv1/bn1, layer{1-4}.{i}.conv{k}/bn{k}, downsample.0/.1, fc (the classifier)."""
    out = {}
    for k, v in bottom_up_only(sd).items():
        if k.startswith("stem.conv1.norm."):
            out[f"{norm_word}1." + k.split(".")[-1]] = v
        elif k.startswith("stem.conv1."):
            out["conv1." + k.split(".")[-1]] = v
        else:
            stage, i, layer, normed, param = _TV_BLOCK.match(k).groups()
            base = f"layer{int(stage) - 1}.{i}"
            if layer == "shortcut":
                out[f"{base}.downsample.{1 if normed else 0}.{param}"] = v
            elif normed:
                out[f"{base}.{norm_word}{layer[-1]}.{param}"] = v
            else:
                out[f"{base}.{layer}.{param}"] = v
    width = out["layer4.0.conv3.weight"].shape[0]
    out["fc.weight"] = torch.randn(10, width)
    out["fc.bias"] = torch.randn(10)
    return out


def to_sn_authors(sd):
    """SN authors' checkpoint: {'state_dict': DataParallel 'module.' names, 'model': arch, 'epoch', ...};
    norms sn{k}, affine (1, C, 1, 1), running statistics (1, C, 1)."""
    tv = to_torchvision(sd, norm_word="sn")
    state = {}
    for k, v in tv.items():
        leaf = k.split(".")[-1]
        is_norm = re.search(r"(^sn1\.|\.sn\d\.|downsample\.1\.)", k) is not None
        if is_norm and leaf in ("weight", "bias"):
            v = v.reshape(1, -1, 1, 1)
        elif is_norm and leaf in ("running_mean", "running_var"):
            v = v.reshape(1, -1, 1)
        state["module." + k] = v
    return {"epoch": 100, "model": "resnetv1sn50", "state_dict": state, "best_prec1": 76.9}


def _c2_block_name(k: str) -> tuple:
    m = re.match(r"^res(\d)\.(\d+)\.(conv1|conv2|conv3|shortcut)(\.norm)?\.(\w+)$", k)
    stage, i, layer, normed, param = m.groups()
    branch = {"conv1": "branch2a", "conv2": "branch2b", "conv3": "branch2c", "shortcut": "branch1"}[layer]
    return f"res{stage}_{i}_{branch}", bool(normed), param


def to_msra_pkl_blobs(sd, eps: float) -> Dict[str, np.ndarray]:
    """MSRA Caffe2 ResNet blobs: BN folded into AffineChannel scale s = w / sqrt(var + eps) and bias
    b = beta - mean * s (``*_bn_s``/``*_bn_b``), stem norm ``res_conv1_bn``, zero conv biases, fc1000."""
    bu = bottom_up_only(sd)
    blobs: Dict[str, np.ndarray] = {}
    norms = {k.rsplit(".", 1)[0] for k in bu if k.endswith("running_mean")}
    for prefix in norms:
        w, b = bu[prefix + ".weight"].double(), bu[prefix + ".bias"].double()
        m, var = bu[prefix + ".running_mean"].double(), bu[prefix + ".running_var"].double()
        s = w / torch.sqrt(var + eps)
        name = "res_conv1_bn" if prefix == "stem.conv1.norm" else _c2_block_name(prefix + ".x")[0] + "_bn"
        blobs[name + "_s"] = _np(s.float())
        blobs[name + "_b"] = _np((b - m * s).float())
    for k, v in bu.items():
        if ".norm." in k:
            continue
        name = "conv1" if k.startswith("stem.") else _c2_block_name(k)[0]
        blobs[name + "_w"] = _np(v)
        blobs[name + "_b"] = np.zeros(v.shape[0], np.float32)  # Caffe2 keeps zero biases
    blobs["fc1000_w"] = np.random.randn(10, 8).astype(np.float32)
    blobs["fc1000_b"] = np.zeros(10, np.float32)
    return blobs


def to_fair_gn_pkl_blobs(sd) -> Dict[str, np.ndarray]:
    """FAIR Caffe2 GN ResNet blobs: ``conv1_w``, ``conv1_gn_{s,b}``, ``res{k}_{i}_branch{..}_gn_{s,b}``."""
    blobs = {}
    for k, v in bottom_up_only(sd).items():
        if k.startswith("stem.conv1.norm."):
            name = "conv1_gn_" + {"weight": "s", "bias": "b"}[k.split(".")[-1]]
        elif k.startswith("stem.conv1."):
            name = "conv1_w"
        else:
            base, normed, param = _c2_block_name(k)
            name = f"{base}_gn_{'s' if param == 'weight' else 'b'}" if normed else f"{base}_w"
        blobs[name] = _np(v)
    return blobs


def to_detectron2(sd) -> Dict[str, torch.Tensor]:
    """detectron2 names and class layout: RPN under proposal_generator.rpn_head (objectness_logits,
    anchor_deltas), the mask head owns deconv/predictor, cls_score has the background LAST, bbox_pred
    K*4 rows (no background), mask predictor K channels."""
    out = {}
    for k, v in sd.items():
        k2 = (k.replace("rpn.head.cls_logits", "proposal_generator.rpn_head.objectness_logits")
               .replace("rpn.head.bbox_pred", "proposal_generator.rpn_head.anchor_deltas")
               .replace("rpn.head.conv", "proposal_generator.rpn_head.conv")
               .replace("roi_heads.mask_predictor.", "roi_heads.mask_head."))
        if k.startswith("roi_heads.box_predictor.cls_score."):
            v = torch.cat([v[1:], v[:1]])
        elif k.startswith("roi_heads.box_predictor.bbox_pred."):
            v = v[4:]
        elif k.startswith("roi_heads.mask_predictor.predictor."):
            v = v[1:]
        out[k2] = v
    return out


def write_pickle(path, obj, protocol=2):
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=protocol)


def to_detectron_c2_detector_blobs(sd, eps: float) -> Dict[str, np.ndarray]:
    """Detectron (Caffe2) FPN Mask R-CNN blobs: the MSRA backbone blobs plus fpn_inner_res{k}_{i}_sum[_lateral],
    fpn_res{k}_{i}_sum, conv_rpn_fpn2 / rpn_cls_logits_fpn2 / rpn_bbox_pred_fpn2, fc6 / fc7, cls_score /
    bbox_pred (background first, (K+1)*4), _[mask]_fcn{n}, conv5_mask, mask_fcn_logits (K+1), *_momentum."""
    blobs = to_msra_pkl_blobs(sd, eps)
    last_block = {s: max(int(k.split(".")[1]) for k in bottom_up_only(sd) if k.startswith(f"res{s}."))
                  for s in range(2, 6)}
    heads = {"rpn.head.conv": "conv_rpn_fpn2", "rpn.head.cls_logits": "rpn_cls_logits_fpn2",
             "rpn.head.bbox_pred": "rpn_bbox_pred_fpn2", "roi_heads.box_head.fc1": "fc6",
             "roi_heads.box_head.fc2": "fc7", "roi_heads.box_predictor.cls_score": "cls_score",
             "roi_heads.box_predictor.bbox_pred": "bbox_pred", "roi_heads.mask_predictor.deconv": "conv5_mask",
             "roi_heads.mask_predictor.predictor": "mask_fcn_logits"}
    for k, v in sd.items():
        module, param = k.rsplit(".", 1)
        if k.startswith(BU):
            continue  # the backbone blobs are MSRA's, above
        suffix = {"weight": "_w", "bias": "_b"}[param]
        m = re.match(r"^backbone\.fpn_(lateral|output)(\d)$", module)
        if m:
            stage = int(m[2])
            lateral = "_lateral" if m[1] == "lateral" and stage < 5 else ""
            inner = "inner_" if m[1] == "lateral" else ""
            blobs[f"fpn_{inner}res{stage}_{last_block[stage]}_sum{lateral}{suffix}"] = _np(v)
        elif module in heads:
            blobs[heads[module] + suffix] = _np(v)
        elif module.startswith("roi_heads.mask_head.mask_fcn"):
            blobs[f"_[mask]_fcn{module[-1]}{suffix}"] = _np(v)
    blobs["fc6_w_momentum"] = np.zeros_like(blobs["fc6_w"])  # SGD state Detectron saves with the blobs
    return blobs


def to_detectron_c2_gn_detector_blobs(sd) -> Dict[str, np.ndarray]:
    """Detectron (Caffe2) GN Mask R-CNN blobs (configs/04_2018_gn_baselines), every conv with GroupNorm
    made by ``model.ConvGN(prefix)``: ``{prefix}_w`` with no conv bias, ``{prefix}_gn_{s,b}``
    (detectron/modeling/detector.py). Prefixes: the FAIR GN backbone; FPN ``fpn_inner_res5_{i}_sum``,
    ``fpn_inner_res{k}_{i}_sum_lateral``, ``fpn_res{k}_{i}_sum`` (FPN.py with FPN.USE_GN); box head
    ``head_conv{n}`` + ``fc6`` (add_roi_Xconv1fc_gn_head); mask head ``_mask_fcn{n}`` (NOT ``_[mask]_fcn{n}``:
    mask_rcnn_fcn_head_v1upXconvs_gn in detectron/modeling/mask_rcnn_heads.py), ``conv5_mask``,
    ``mask_fcn_logits``; RPN ``conv_rpn_fpn2`` etc. with biases."""
    blobs = to_fair_gn_pkl_blobs(sd)
    last_block = {s: max(int(k.split(".")[1]) for k in bottom_up_only(sd) if k.startswith(f"res{s}."))
                  for s in range(2, 6)}
    plain = {"rpn.head.conv": "conv_rpn_fpn2", "rpn.head.cls_logits": "rpn_cls_logits_fpn2",
             "rpn.head.bbox_pred": "rpn_bbox_pred_fpn2", "roi_heads.box_predictor.cls_score": "cls_score",
             "roi_heads.box_predictor.bbox_pred": "bbox_pred", "roi_heads.mask_predictor.deconv": "conv5_mask",
             "roi_heads.mask_predictor.predictor": "mask_fcn_logits", "roi_heads.box_head.fc1": "fc6"}
    for k, v in sd.items():
        if k.startswith(BU):
            continue
        normed = ".norm." in k
        module, param = k.replace(".norm.", ".").rsplit(".", 1) if normed else k.rsplit(".", 1)
        m = re.match(r"^backbone\.fpn_(lateral|output)(\d)$", module)
        if m:
            stage = int(m[2])
            if m[1] == "lateral":
                prefix = f"fpn_inner_res{stage}_{last_block[stage]}_sum" + ("_lateral" if stage < 5 else "")
            else:
                prefix = f"fpn_res{stage}_{last_block[stage]}_sum"
        elif re.match(r"^roi_heads\.box_head\.conv\d+$", module):
            prefix = f"head_conv{module[-1]}"
        elif re.match(r"^roi_heads\.mask_head\.mask_fcn\d+$", module):
            prefix = f"_mask_fcn{module[-1]}"
        elif module in plain:
            prefix = plain[module]
        else:
            raise AssertionError(f"no Detectron name for {k}")
        suffix = f"_gn_{'s' if param == 'weight' else 'b'}" if normed else {"weight": "_w", "bias": "_b"}[param]
        blobs[prefix + suffix] = _np(v)
    return blobs
