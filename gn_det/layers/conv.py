"""Convs by name: ``CONV_REGISTRY`` with "" (plain) and "WS" (Weight Standardization), each carrying its norm.

Every conv that may take a norm in the detector is a ``Conv2d`` (torch's conv followed by an optional
``.norm`` and activation, as detectron2's layers.Conv2d), of the class the config key next to the part's
NORM key names: MODEL.RESNETS.CONV, MODEL.FPN.CONV, MODEL.RPN.HEAD_CONV, MODEL.ROI_BOX_HEAD.CONV,
MODEL.ROI_MASK_HEAD.CONV. With GN, "WS" is the "GN+WS" of Qiao et al. (arXiv 1903.10520).
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor, nn

from gn_det.utils.registry import Registry

from .norm import applies_activation

CONV_REGISTRY = Registry("CONV")
CONV_REGISTRY.__doc__ = """
Registry of conv classes by name: "" (plain Conv2d) and "WS" (WSConv2d). An entry is a class taking
nn.Conv2d's arguments plus the keywords ``norm`` (module or None), ``activation`` (callable or None) and
``bias`` (None: off exactly when a norm follows), whose state dict has nn.Conv2d's names (``weight``,
``bias``) plus ``norm.*``, so checkpoints of every entry load into every other.
"""


class Conv2d(nn.Conv2d):
    """nn.Conv2d followed by an optional ``.norm`` and activation (detectron2's layers.Conv2d).

    The norm sits inside the conv module so checkpoint names read ``<conv>.weight`` and
    ``<conv>.norm.weight``. The bias defaults to off when a norm follows (the norm's shift replaces it).
    ``activation`` is dropped when the norm applies its own (a norm with includes_activation built by
    ``get_norm(..., act=True)``, such as FRN+TLU: see gn_det.layers.applies_activation).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *args,
        norm: Optional[nn.Module] = None,
        activation: Optional[Callable[[Tensor], Tensor]] = None,
        bias: Optional[bool] = None,
        **kwargs,
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, *args,
                         bias=norm is None if bias is None else bias, **kwargs)
        self.norm = norm
        self.activation = None if applies_activation(norm) else activation

    def conv_weight(self) -> Tensor:
        """The weight the convolution uses (WSConv2d standardizes it)."""
        return self.weight

    def forward(self, x: Tensor) -> Tensor:
        """conv -> norm -> activation."""
        x = self._conv_forward(x, self.conv_weight(), self.bias)
        if self.norm is not None:
            x = self.norm(x)
        if self.activation is not None:
            x = self.activation(x)
        return x


def standardize_weight(weight: Tensor, eps: float) -> Tensor:
    """``(w - mean) / sqrt(var + eps)`` per output channel over (in, kh, kw), biased variance.

    Computed in float32 (float64 for a float64 weight) whatever autocast does to the convolution that
    follows, then returned in the weight's dtype.
    """
    dtype = torch.promote_types(weight.dtype, torch.float32)
    flat = weight.to(dtype).flatten(1)
    var, mean = torch.var_mean(flat, dim=1, correction=0, keepdim=True)
    return ((flat - mean) * torch.rsqrt(var + eps)).view_as(weight).to(weight.dtype)


class WSConv2d(Conv2d):
    """Conv2d with Weight Standardization (Qiao et al., arXiv 1903.10520, Eq. 5-6).

    Each output channel's weight is standardized over (in, kh, kw) before the convolution:
    ``w_hat = (w - mean) / sqrt(var + eps)`` with the biased (population) variance, in float32. The
    stored ``weight`` stays the raw one, so plain conv checkpoints load unchanged (same names) and the
    standardization applies at every forward. Differences from others' code: the paper's reference and
    mmcv's ConvWS2d divide by ``std + eps`` with the unbiased std; timm's StdConv2d matches this class
    but defaults to eps 1e-6. ``eps`` (default 1e-5, the paper's and mmcv's) is an attribute.
    """

    def __init__(self, *args, eps: float = 1e-5, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.eps = eps

    def conv_weight(self) -> Tensor:
        return standardize_weight(self.weight, self.eps)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, eps={self.eps}"


CONV_REGISTRY.register("")(Conv2d)
CONV_REGISTRY.register("WS")(WSConv2d)


def get_conv(name: Optional[str], *, key: str = "conv") -> type:
    """The conv class registered as ``name`` ("" or None: plain Conv2d); ``key`` is quoted in errors."""
    if name is None:
        name = ""
    if not isinstance(name, str):
        raise TypeError(f"{key} must be a conv name (str, '' for a plain conv), got {name!r}")
    return CONV_REGISTRY.get(name, key=key)
