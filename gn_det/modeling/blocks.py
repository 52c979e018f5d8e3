"""Building blocks shared by the backbone and heads: a conv that carries its norm, and the inits."""
from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import nn

from gn_det.config import norm_options_from_cfg
from gn_det.layers import get_norm

# (channels, zero_init=False) -> norm module, or None for no norm
NormFn = Callable[..., Optional[nn.Module]]


class Conv2d(nn.Conv2d):
    """nn.Conv2d followed by an optional ``.norm`` and activation (detectron2's layers.Conv2d).

    The norm sits inside the conv module so checkpoint names read ``<conv>.weight`` and
    ``<conv>.norm.weight``. The bias defaults to off when a norm follows (the norm's shift replaces it).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *args,
        norm: Optional[nn.Module] = None,
        activation: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
        bias: Optional[bool] = None,
        **kwargs,
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, *args, bias=norm is None if bias is None else bias, **kwargs)
        self.norm = norm
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """conv -> norm -> activation."""
        x = super().forward(x)
        if self.norm is not None:
            x = self.norm(x)
        if self.activation is not None:
            x = self.activation(x)
        return x


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
    """``(channels, zero_init=False) -> norm`` for the norm ``name`` set by config key ``key``."""
    options = norm_options_from_cfg(cfg)

    def build(channels: int, zero_init: bool = False) -> Optional[nn.Module]:
        return get_norm(name, channels, options, key=key, zero_init=zero_init)

    return build
