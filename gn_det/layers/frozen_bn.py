"""FrozenBN: BatchNorm with fixed statistics and affine, the usual choice for a pretrained backbone.

It is one per-channel affine ``y = (x - running_mean) / sqrt(running_var + eps) * weight + bias``,
computed by torch's eval-mode batch-norm kernel: one fused pass forward and one backward (grad of
the input only; it has no parameters). ``train()`` changes nothing. Its state dict has BN's keys,
so BN checkpoints load into it; ``num_batches_tracked`` is optional and ignored.
"""
from __future__ import annotations

from typing import Any, Dict, List

import torch
from torch import Tensor, nn

from .fused import channel_affine
from .batch_norm import BN_LOADS, BNOptions
from .norm import register_norm
from .traits import BN_KIND, NormTraits
from .shapes import check_input_4d

# Converted by convert_frozen_batchnorm: BN2d and every SyncBatchNorm (gn_det's subclasses it).
BATCHNORM_TYPES = (nn.BatchNorm2d, nn.SyncBatchNorm)


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm2d whose statistics and affine are buffers: no trainable parameters, same in train and eval."""

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def forward(self, x: Tensor) -> Tensor:
        check_input_4d(self, x)
        return channel_affine(x, self.running_mean, self.running_var, self.weight, self.bias, self.eps)

    def _load_from_state_dict(
        self, state_dict: Dict[str, Any], prefix: str, local_metadata: Dict, strict: bool,
        missing_keys: List[str], unexpected_keys: List[str], error_msgs: List[str],
    ) -> None:
        # BN checkpoints carry num_batches_tracked (torch >= 0.4.1); it means nothing to frozen statistics.
        state_dict.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"


def frozen_from_batchnorm(bn: nn.Module) -> FrozenBatchNorm2d:
    """A FrozenBatchNorm2d carrying ``bn``'s eps, affine (ones/zeros if none) and running statistics.

    ``bn`` is a BN-kind norm: torch's _BatchNorm, or one holding BN's state (BRN).
    """
    affine = getattr(bn, "affine", getattr(bn, "weight", None) is not None)
    ref = bn.weight if affine else bn.running_mean
    frozen = FrozenBatchNorm2d(bn.num_features, eps=bn.eps)
    if ref is not None:
        frozen = frozen.to(device=ref.device, dtype=ref.dtype)
    with torch.no_grad():
        if affine:
            frozen.weight.copy_(bn.weight)
            frozen.bias.copy_(bn.bias)
        if bn.running_mean is not None:
            frozen.running_mean.copy_(bn.running_mean)
            frozen.running_var.copy_(bn.running_var)
    return frozen


def convert_frozen_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm2d / SyncBatchNorm in ``module`` by FrozenBN with its statistics and affine.

    Returns the converted module: a new one when ``module`` itself is a BN, else ``module`` changed in place.
    """
    if isinstance(module, BATCHNORM_TYPES):
        return frozen_from_batchnorm(module)
    for name, child in module.named_children():
        new_child = convert_frozen_batchnorm(child)
        if new_child is not child:
            module.add_module(name, new_child)
    return module


def _already_frozen(module: nn.Module) -> nn.Module:
    """FrozenBN's freeze: nothing to do (no parameters, statistics never updated)."""
    return module


@register_norm("FrozenBN", options=BNOptions, traits=NormTraits(kind=BN_KIND, running_stats=True, loads_from=BN_LOADS),
               freeze=_already_frozen, module_types=(FrozenBatchNorm2d, "torchvision.ops.misc.FrozenBatchNorm2d"))
def build_frozen_batch_norm(channels: int, options: BNOptions) -> FrozenBatchNorm2d:
    """FrozenBN with eps from MODEL.BN.EPSILON (torchvision's COCO weights were trained with eps=0)."""
    return FrozenBatchNorm2d(channels, eps=options.epsilon)
