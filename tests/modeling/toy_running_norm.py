"""A user's norm declared in one file: BN with an extra learned ``gain``, running and batch statistics.

Importing this file registers "ToyRun" with its options (config node MODEL.TOYRUN) and its traits; nothing
else in gn_det is edited. tests/modeling/test_declared_norm.py imports it and checks that every part of
gn_det treats it right.
"""
from dataclasses import dataclass

import torch
from torch import nn

from gn_det.layers import FamilyOptions, NormTraits, register_norm


@dataclass(frozen=True)
class ToyRunOptions(FamilyOptions):
    """MODEL.TOYRUN.MOMENTUM / EPSILON."""

    config_node = "MODEL.TOYRUN"
    momentum: float = 0.2
    epsilon: float = 1e-4


class ToyRunNorm2d(nn.Module):
    """``(x - mean) / sqrt(var + eps) * weight * gain + bias``; batch statistics in training (running
    statistics updated with ``momentum``, PyTorch's convention, unbiased variance), running ones in eval."""

    def __init__(self, channels: int, momentum: float = 0.2, eps: float = 1e-4) -> None:
        super().__init__()
        self.momentum, self.eps = momentum, eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.gain = nn.Parameter(torch.ones(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            mean, var = x.mean((0, 2, 3)), x.var((0, 2, 3), unbiased=False)
            n = x.numel() // x.shape[1]
            with torch.no_grad():
                self.running_mean.mul_(1 - self.momentum).add_(self.momentum * mean)
                self.running_var.mul_(1 - self.momentum).add_(self.momentum * var * n / (n - 1))
        else:
            mean, var = self.running_mean, self.running_var
        y = (x - mean[:, None, None]) / torch.sqrt(var[:, None, None] + self.eps)
        return y * (self.weight * self.gain)[:, None, None] + self.bias[:, None, None]


@register_norm("ToyRun", options=ToyRunOptions,
               traits=NormTraits(kind="ToyRun", running_stats=True, batch_dependent=True),
               module_types=(ToyRunNorm2d,), state_keys=("weight", "bias", "gain", "running_mean", "running_var"))
def build_toy_run(channels: int, options: ToyRunOptions) -> ToyRunNorm2d:
    return ToyRunNorm2d(channels, options.momentum, options.epsilon)
