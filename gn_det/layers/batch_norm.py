"""BN with batch statistics: torch's BatchNorm2d with the configured momentum and eps."""
from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from .fused import kernel_eps
from .norm import register_norm
from .options import FamilyOptions
from .shapes import check_batch_statistics, check_input_4d, values_per_channel
from .traits import BN_FOLDED_KIND, BN_KIND, NormTraits


@dataclass(frozen=True)
class BNOptions(FamilyOptions):
    """Options of BN, SyncBN and FrozenBN: config node MODEL.BN (MOMENTUM, EPSILON)."""

    config_node = "MODEL.BN"
    momentum: float = 0.1  # running-statistics momentum, PyTorch convention (torch.nn.BatchNorm2d default)
    epsilon: float = 1e-5  # BN/SyncBN/FrozenBN eps (torch default; torchvision's COCO weights used 0)


# BN-kind norms load BN statistics and Caffe2's folded BN (scale/bias, see gn_det.checkpoint.matching).
BN_LOADS = frozenset({BN_KIND, BN_FOLDED_KIND})
BN_TRAITS = NormTraits(kind=BN_KIND, running_stats=True, batch_dependent=True, loads_from=BN_LOADS)


class BatchNorm2d(nn.BatchNorm2d):
    """torch's BatchNorm2d with errors that name the shape and the norms that work at batch size 1.

    ``eps <= 0`` (torchvision's detection weights) is stored as float32's smallest normal number, the
    same result for every variance above 1e-31, because torch 2.11's kernels refuse eps <= 0.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, *args, **kwargs) -> None:
        super().__init__(num_features, kernel_eps(eps), *args, **kwargs)

    def forward(self, x: Tensor) -> Tensor:
        check_input_4d(self, x)
        if self.training:
            check_batch_statistics(self, values_per_channel(x), f"an input of shape {tuple(x.shape)}")
        return super().forward(x)


def freeze_batch_norm(module: nn.Module) -> nn.Module:
    """BN / SyncBN frozen: a FrozenBN carrying its statistics and affine."""
    from .frozen_bn import frozen_from_batchnorm  # frozen_bn imports this module (BNOptions)

    return frozen_from_batchnorm(module)


@register_norm("BN", options=BNOptions, traits=BN_TRAITS, freeze=freeze_batch_norm,
               module_types=(nn.modules.batchnorm._BatchNorm,))
def build_batch_norm(channels: int, options: BNOptions) -> BatchNorm2d:
    """Per-process BatchNorm2d (statistics over this process's batch only), momentum/eps from MODEL.BN."""
    return BatchNorm2d(channels, eps=options.epsilon, momentum=options.momentum)
