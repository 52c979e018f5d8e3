"""BN with batch statistics: torch's BatchNorm2d with the configured momentum and eps."""
from __future__ import annotations

from torch import Tensor, nn

from .fused import kernel_eps
from .norm import NORM_REGISTRY, NormOptions
from .shapes import check_batch_statistics, check_input_4d, values_per_channel


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


@NORM_REGISTRY.register("BN")
def build_batch_norm(channels: int, options: NormOptions) -> BatchNorm2d:
    """Per-process BatchNorm2d (statistics over this process's batch only), momentum/eps from MODEL.BN."""
    return BatchNorm2d(channels, eps=options.bn_eps, momentum=options.bn_momentum)
