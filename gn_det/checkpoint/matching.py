"""Match converted checkpoint tensors to a model's state dict, norm layer by norm layer.

Rules, in order:
- a norm layer loads only from a checkpoint norm of a kind its traits accept (``loads_from``, declared
  where the norm is registered: BN statistics or Caffe2's folded BN into BN/SyncBN/FrozenBN, GN into
  GN/LN/IN, SN into SN, a user's norm into itself). Anything else is a norm-kind mismatch, reported and
  not loaded (half-loading a BN's affine into a GN would silently change the function). The kind of a
  checkpoint's tensor group is read from its leaf names against the state keys each kind declares
  (gn_det.layers.declare_kind); converters set it where names cannot tell (Caffe2's folded BN).
- Caffe2's folded BN (y = s * x + b) loads into a BN-kind layer as weight s, bias b, running_mean 0 and
  running_var 1 - eps, so that s / sqrt(running_var + eps) = s: outputs match the Caffe2 model exactly.
- tensors equal up to singleton dimensions are reshaped (the SN authors' (1, C, 1, 1) affine).
- class-specific predictors whose number of outputs differs are skipped (fine-tuning on another class
  set); other shape differences (a predictor's input width too) are reported as shape-mismatched.
  All-zero biases for convs without a bias
  (Caffe2 writes them) and BN ``num_batches_tracked`` counters are bookkeeping, not errors.
"""
from __future__ import annotations

from typing import AbstractSet, Dict, Iterable, List, Optional, Set

import torch
from torch import nn

from gn_det.layers import kind_state_keys, kinds_holding, norm_traits
from gn_det.layers.traits import BOOKKEEPING_KEYS

from .converted import BN_FOLDED, ConvertedWeights
from .report import LoadReport, NormMismatch

PREDICTOR_MODULES = (
    "roi_heads.box_predictor.cls_score",
    "roi_heads.box_predictor.bbox_pred",
    "roi_heads.mask_predictor.predictor",
)
_BOOKKEEPING = tuple(sorted(BOOKKEEPING_KEYS))


def model_norm_kind(module: nn.Module) -> Optional[str]:
    """The checkpoint kind of a norm module (its traits' ``kind``), None for anything that is not a norm."""
    traits = norm_traits(module)
    return traits.kind if traits is not None else None


def checkpoint_norm_kind(leaves: Iterable[str], accepts: AbstractSet[str] = frozenset(), own_kind: Optional[str] = None,
                         own_leaves: Optional[AbstractSet[str]] = None) -> str:
    """Kind of a checkpoint norm from its tensor leaf names (converters set Caffe2's folded BN instead).

    The declared kinds holding exactly these names, preferring one of ``accepts`` (the loading norm's
    ``loads_from``: kinds with identical names cannot be told apart otherwise); for a norm whose own kind
    declares no state keys, names equal to its own (``own_leaves``) are its kind; else the first declared
    match, else "unknown (<names>)".
    """
    wanted = frozenset(leaves) - BOOKKEEPING_KEYS
    candidates = kinds_holding(wanted)
    for kind in candidates:
        if kind in accepts:
            return kind
    if own_kind is not None and kind_state_keys(own_kind) is None and own_leaves is not None \
            and wanted == frozenset(own_leaves) - BOOKKEEPING_KEYS:
        return own_kind
    return candidates[0] if candidates else f"unknown ({', '.join(sorted(wanted))})"


def _same_up_to_singletons(a: torch.Size, b: torch.Size) -> bool:
    return a.numel() == b.numel() and [d for d in a if d != 1] == [d for d in b if d != 1]


def _under(keys, prefix: str) -> List[str]:
    """Direct tensors of module ``prefix`` (not of its children)."""
    return [k for k in keys if k.startswith(prefix + ".") and "." not in k[len(prefix) + 1:]]


def _match_norms(model: nn.Module, model_sd, weights: ConvertedWeights, report: LoadReport, handled: Set[str]):
    """Resolve every model norm layer against the checkpoint; returns extra tensors to load."""
    extra: Dict[str, torch.Tensor] = {}
    for name, module in model.named_modules():
        traits = norm_traits(module)
        ckpt_keys = _under(weights.tensors, name) if traits is not None else []
        if not ckpt_keys:
            continue
        leaves = {k.rsplit(".", 1)[1] for k in ckpt_keys}
        model_keys = _under(model_sd, name)
        ckpt_kind = weights.norm_kinds.get(name) or checkpoint_norm_kind(
            leaves, traits.loads_from, traits.kind, {k.rsplit(".", 1)[1] for k in model_keys})
        if ckpt_kind not in traits.loads_from:
            report.norm_mismatches.append(NormMismatch(name, ckpt_kind, traits.kind, model_keys))
            handled.update(ckpt_keys)
            handled.update(f"model:{k}" for k in model_keys)
            continue
        if ckpt_kind == BN_FOLDED:
            eps = float(getattr(module, "eps", 0.0))
            channels = weights.tensors[ckpt_keys[0]].numel()
            extra[f"{name}.running_mean"] = torch.zeros(channels)
            extra[f"{name}.running_var"] = torch.full((channels,), 1.0 - eps)
    return extra


def match_weights(model: nn.Module, weights: ConvertedWeights, report: LoadReport) -> Dict[str, torch.Tensor]:
    """Fill ``report`` and return the tensors to load, keyed and shaped as in ``model.state_dict()``."""
    model_sd = model.state_dict()
    handled: Set[str] = set()
    tensors = dict(weights.tensors)
    folded = _match_norms(model, model_sd, weights, report, handled)
    if folded:
        report.notes.append(
            f"{len(folded) // 2} Caffe2 folded-BN scale/bias pairs loaded as BN with running_mean 0 and "
            "running_var 1 - eps (exactly the Caffe2 affine transform)"
        )
    tensors.update(folded)
    to_load: Dict[str, torch.Tensor] = {}
    dropped_zero_bias = 0
    for key in sorted(tensors):
        if key in handled:
            continue
        value = tensors[key]
        source = weights.sources.get(key, key)
        if key not in model_sd:
            if key.endswith(_BOOKKEEPING):
                continue
            owner = key.rsplit(".", 1)[0]
            if key.endswith(".bias") and f"{owner}.weight" in model_sd and not torch.any(value != 0):
                dropped_zero_bias += 1  # Caffe2's all-zero conv bias where our conv has none
                continue
            report.unexpected.append(source)
            continue
        target = model_sd[key]
        if value.shape != target.shape:
            if _same_up_to_singletons(value.shape, target.shape):
                value = value.reshape(target.shape)
            elif key.rsplit(".", 1)[0] in PREDICTOR_MODULES and value.shape[1:] == target.shape[1:]:
                # only the number of outputs differs: another class count (a width change is a mismatch)
                report.skipped_predictors.append((key, tuple(value.shape), tuple(target.shape)))
                handled.add(f"model:{key}")
                continue
            else:
                report.shape_mismatched.append((key, tuple(value.shape), tuple(target.shape)))
                handled.add(f"model:{key}")
                continue
        to_load[key] = value.to(dtype=target.dtype)
        report.matched.append(key)
    if dropped_zero_bias:
        report.notes.append(f"ignored {dropped_zero_bias} all-zero conv biases (our convs followed by a norm have none)")
    report.missing = [
        k for k in model_sd if k not in to_load and f"model:{k}" not in handled and not k.endswith(_BOOKKEEPING)
    ]
    return to_load
