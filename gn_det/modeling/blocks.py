"""Building blocks shared by the backbone and heads: norm and conv factories from config keys, and the inits.

The conv that carries its norm is gn_det.layers.Conv2d (re-exported here); the class a part uses comes
from its CONV key (gn_det.layers.CONV_REGISTRY: "" plain, "WS" Weight Standardization).
"""
from __future__ import annotations

from typing import Callable, Optional

from torch import nn

from gn_det.config import norm_options_from_cfg
from gn_det.layers import Conv2d, get_conv, get_norm

# (channels, zero_init=False, act=False) -> norm module, or None for no norm. ``act``: a ReLU follows it.
NormFn = Callable[..., Optional[nn.Module]]
# A Conv2d class: (in, out, kernel, *conv args, norm=, activation=, bias=) -> Conv2d
ConvFn = Callable[..., Conv2d]

__all__ = ["Conv2d", "ConvFn", "NormFn", "c2_msra_fill", "c2_xavier_fill", "conv_fn", "norm_fn"]


def c2_msra_fill(module: nn.Module) -> None:
    """He (MSRA) normal init, fan_out, bias 0: Caffe2's MSRAFill used by detectron2 for ResNet/heads."""
    nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
    if module.bias is not None:
        nn.init.zeros_(module.bias)


def c2_xavier_fill(module: nn.Module) -> None:
    """Caffe2's XavierFill (uniform, a=1), bias 0: detectron2's init for FPN convs and box-head fcs."""
    nn.init.kaiming_uniform_(module.weight, a=1)
    if module.bias is not None:
        nn.init.zeros_(module.bias)


def norm_fn(name: str, cfg, key: str) -> NormFn:
    """``(channels, zero_init=False, act=False) -> norm`` for the norm ``name`` set by config key ``key``.

    Pass ``act=True`` where a ReLU follows the norm: a norm that includes its activation (FRN+TLU,
    EvoNorm) then applies it, and the Conv2d it is given to drops its ReLU.
    """
    options = norm_options_from_cfg(cfg)

    def build(channels: int, zero_init: bool = False, act: bool = False) -> Optional[nn.Module]:
        return get_norm(name, channels, options, key=key, zero_init=zero_init, act=act)

    return build


def conv_fn(name: str, key: str) -> ConvFn:
    """The Conv2d class registered as ``name`` (config key ``key``): plain or WS."""
    return get_conv(name, key=key)
