"""detectron2's machinery taught that gn_det's norms are norms: freezing, norm weight decay, precise BN, build_model.

detectron2 decides by class: ``FrozenBatchNorm2d.convert_frozen_batchnorm`` freezes only BN/SyncBN, the
optimizer's ``norm_module_types`` and fvcore's precise-BN ``BN_MODULE_TYPES`` list torch's classes. The
replacements here run detectron2's own code first and then treat every gn_det norm by its declared traits
(gn_det.layers), as gn_det's own engine does; detectron2's modules keep detectron2's behaviour.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional

import torch
from torch import nn

from gn_det.engine.precise_bn import update_bn_stats as gn_det_update_bn_stats
from gn_det.layers import freeze_norms, is_norm, norm_traits

from .norms import options_from
from .patching import mark_replacement


def make_convert_frozen_batchnorm(original: Callable) -> classmethod:
    """``FrozenBatchNorm2d.convert_frozen_batchnorm`` that also freezes gn_det norms (a frozen stage's SN,
    BRN, EvoNorm-B0 stop updating statistics; every norm's parameters stop taking gradients)."""

    def convert_frozen_batchnorm(cls, module: nn.Module) -> nn.Module:
        return freeze_norms(original(cls, module))

    convert_frozen_batchnorm.__doc__ = (original.__doc__ or "") + "\n        gn_det.detectron2: gn_det norms " \
        "are frozen too (gn_det.layers.freeze_norms)."
    return classmethod(mark_replacement(original, convert_frozen_batchnorm))


def _gn_det_norm_params(model: nn.Module) -> Dict[int, str]:
    """id(parameter) -> its name within its module, for the parameters of every norm gn_det recognises."""
    out: Dict[int, str] = {}
    for module in model.modules():
        if is_norm(module):
            for name, param in module.named_parameters(recurse=False):
                out.setdefault(id(param), name)
    return out


def make_get_default_optimizer_params(original: Callable, reduce_param_groups: Callable) -> Callable:
    """detectron2's ``get_default_optimizer_params`` in which ``weight_decay_norm`` (SOLVER.WEIGHT_DECAY_NORM)
    also reaches gn_det norms' parameters (SN's importance weights, FRN's tau, EvoNorm's v, ...).

    As detectron2 orders it: a norm parameter takes ``weight_decay_norm``, then a per-name override
    (``overrides``, ``weight_decay_bias`` for "bias") wins over it.
    """

    def get_default_optimizer_params(
        model: nn.Module, base_lr: Optional[float] = None, weight_decay: Optional[float] = None,
        weight_decay_norm: Optional[float] = None, bias_lr_factor: Optional[float] = 1.0,
        weight_decay_bias: Optional[float] = None, lr_factor_func: Optional[Callable] = None,
        overrides: Optional[Dict[str, Dict[str, float]]] = None,
    ) -> List[Dict[str, Any]]:
        groups = original(model, base_lr=base_lr, weight_decay=weight_decay, weight_decay_norm=weight_decay_norm,
                          bias_lr_factor=bias_lr_factor, weight_decay_bias=weight_decay_bias,
                          lr_factor_func=lr_factor_func, overrides=overrides)
        if weight_decay_norm is None:
            return groups
        norm_params = _gn_det_norm_params(model)
        per_param: List[Dict[str, Any]] = []
        for group in groups:
            hyper = {k: v for k, v in group.items() if k != "params"}
            for param in group["params"]:
                entry = dict(hyper)
                local = norm_params.get(id(param))
                if local is not None:
                    entry["weight_decay"] = weight_decay_norm
                    named = dict((overrides or {}).get(local, {}))
                    if local == "bias" and weight_decay_bias is not None:
                        named["weight_decay"] = weight_decay_bias
                    if "weight_decay" in named:
                        entry["weight_decay"] = named["weight_decay"]
                per_param.append({"params": [param], **entry})
        return reduce_param_groups(per_param)

    get_default_optimizer_params.__doc__ = (original.__doc__ or "") + "\n    gn_det.detectron2: weight_decay_norm " \
        "also applies to gn_det norms."
    return get_default_optimizer_params


def _recomputable(module: nn.Module) -> bool:
    traits = norm_traits(module)
    return traits is not None and traits.running_stats and traits.batch_dependent and module.training


def make_get_bn_modules(original: Callable) -> Callable:
    """fvcore's ``get_bn_modules`` (BN layers in training mode) plus the gn_det norms in training mode whose
    traits say they keep running statistics from batch statistics (SN with its BN branch, BRN, EvoNorm-B0)."""

    def get_bn_modules(model: nn.Module) -> List[nn.Module]:
        found = list(original(model))
        seen = {id(m) for m in found}
        found += [m for m in model.modules() if id(m) not in seen and _recomputable(m)]
        return found

    return get_bn_modules


def make_update_bn_stats(get_bn_modules: Callable) -> Callable:
    """Precise BN over detectron2's batches (``model(list of dicts)``) for every layer ``get_bn_modules`` finds:
    gn_det's update (the exact average of batch statistics, step counts kept, averaged over processes)."""

    def update_bn_stats(model: nn.Module, data_loader, num_iter: int = 200, progress: Optional[str] = None) -> int:
        return gn_det_update_bn_stats(model, data_loader, num_iter, run=model, layers=get_bn_modules(model))

    return update_bn_stats


def make_build_model(original: Callable) -> Callable:
    """detectron2's ``build_model`` with gn_det norms made by its builders taking ``cfg``'s option nodes."""

    def build_model(cfg) -> nn.Module:
        with options_from(cfg):
            return original(cfg)

    build_model.__doc__ = (original.__doc__ or "") + "\n    gn_det.detectron2: gn_det norms read cfg's " \
        "MODEL.SN / MODEL.BRN / ... nodes."
    return build_model


__all__ = ["make_build_model", "make_convert_frozen_batchnorm", "make_get_bn_modules",
           "make_get_default_optimizer_params", "make_update_bn_stats"]
