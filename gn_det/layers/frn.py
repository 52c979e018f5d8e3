"""Filter Response Normalization with its Thresholded Linear Unit (Singh & Krishnan, arXiv 1911.09737).

Per sample and channel, with ``nu2 = mean_hw(x^2)`` (no mean subtraction, no batch statistics):
``y = max(gamma * x / sqrt(nu2 + eps) + beta, tau)``. The TLU ``max(., tau)`` is the layer's
activation, so FRN+TLU replaces norm + ReLU; ``apply_act=False`` drops it (FRN alone) for positions
that no ReLU follows (the last norm of a residual block, FPN convs), as in Yuxin Wu's ImageNet
baseline of FRN. Training and eval compute the same thing.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from .fused import channel_sums
from .norm import register_norm
from .options import FamilyOptions
from .precision import float32_forward
from .shapes import check_input_4d, empty_output
from .traits import NormTraits, declare_kind

FRN_EPS = 1e-6  # the paper's reference code: FRNLayer(x, tau, beta, gamma, eps=1e-6)
# Start of the learned part of eps. The paper lower-bounds a learned eps by a fixed one
# (eps = eps_fixed + |eps_learned|), about 1e-4 when eps is learned (as a Keras port of its code
# notes); starting there keeps |.| differentiable (d|e|/de = 0 at e = 0 would never move).
FRN_LEARNED_EPS_INIT = 1e-4


class _FRNFunction(torch.autograd.Function):
    """FRN (+ TLU) forward in one pass over x after a norm reduction; backward in closed form.

    With ``s = (mean_hw(x^2) + eps)^-1/2`` per (n, c), ``z = gamma * s * x + beta`` and ``y = max(z, tau)``:
    ``dz = dy * [z > tau]``, ``P = sum_hw(dz * x)``, ``dx = gamma * s * dz - gamma * s^3 * P / (H*W) * x``.
    Saves x, s and where the TLU clips (1 byte per value), never the output, so in-place ops on y are safe.
    """

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor, tau: Optional[Tensor],
                eps_learned: Optional[Tensor], eps: float) -> Tensor:
        n, c, h, w = x.shape
        # mean_hw(x^2) as a squared 2-norm: one reduction, no x^2 temporary
        nu2 = torch.linalg.vector_norm(x, dim=(2, 3)).square() / max(h * w, 1)
        s = torch.rsqrt(nu2 + (eps_learned.abs() + eps if eps_learned is not None else eps))  # (N, C)
        y = torch.addcmul(bias.view(1, c, 1, 1), x, (s * weight).view(n, c, 1, 1))
        clipped = None
        if tau is not None:
            clipped = y <= tau.view(1, c, 1, 1)  # where the TLU outputs tau (no gradient to z)
            y.clamp_(min=tau.view(1, c, 1, 1))
        ctx.save_for_backward(x, weight, s, clipped, eps_learned)
        return y

    @staticmethod
    def backward(ctx, dy: Tensor) -> Tuple[Optional[Tensor], ...]:
        x, weight, s, clipped, eps_learned = ctx.saved_tensors
        n, c, h, w = x.shape
        dz = dy.masked_fill(clipped, 0.0) if clipped is not None else dy.contiguous()
        zeros = x.new_zeros(n * c)
        p, sum_dz = (t.view(n, c) for t in channel_sums(dz.view(1, n * c, h * w), x.view(1, n * c, h * w), zeros))
        d_tau = (dy.sum((2, 3)) - sum_dz).sum(0) if clipped is not None else None
        g_s3_p = weight * s.pow(3) * p  # (N, C)
        dx = None
        if ctx.needs_input_grad[0]:
            a, b = (weight * s).view(n, c, 1, 1), (g_s3_p / -max(h * w, 1)).view(n, c, 1, 1)
            dx = dz.mul_(a) if clipped is not None else dz * a  # dz is ours to overwrite when masked
            dx.addcmul_(x, b)
        d_eps = (-0.5 * g_s3_p.sum() * torch.sign(eps_learned)) if eps_learned is not None else None
        return dx, (s * p).sum(0), sum_dz.sum(0), d_tau, d_eps, None


class FilterResponseNorm2d(nn.Module):
    """FRN (+ TLU with ``apply_act``) over (N, C, H, W); parameters ``weight``, ``bias``, ``tau`` (C).

    Traits: no running statistics; batch-free (train = eval, fine at 1 image per GPU); includes the
    activation when ``apply_act`` (TLU; no ReLU after it). State keys: weight, bias, tau (apply_act),
    eps_learned (learn_eps; one scalar per layer as in the paper's code).
    """

    def __init__(self, num_features: int, eps: float = FRN_EPS, learn_eps: bool = False,
                 apply_act: bool = True) -> None:
        super().__init__()
        if eps <= 0:
            raise ValueError(f"FilterResponseNorm2d needs eps > 0 (the paper uses {FRN_EPS}), got {eps}")
        self.num_features = num_features
        self.eps = eps  # fixed part; the effective eps adds |eps_learned| when learn_eps
        self.learn_eps = learn_eps
        self.apply_act = apply_act
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.tau = nn.Parameter(torch.zeros(num_features)) if apply_act else None  # TLU threshold, 0 as ReLU
        self.eps_learned = nn.Parameter(torch.full((1,), FRN_LEARNED_EPS_INIT)) if learn_eps else None

    def forward(self, x: Tensor) -> Tensor:
        check_input_4d(self, x)
        return float32_forward(self._forward, x)

    def _forward(self, x: Tensor) -> Tensor:
        if x.numel() == 0:
            return empty_output(x, *self.parameters())
        return _FRNFunction.apply(x.contiguous(), self.weight, self.bias, self.tau, self.eps_learned, self.eps)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, learn_eps={self.learn_eps}, apply_act={self.apply_act}"


@dataclass(frozen=True)
class FRNOptions(FamilyOptions):
    """Options of FRN: config node MODEL.FRN (EPSILON, LEARNED_EPS)."""

    config_node = "MODEL.FRN"
    epsilon: float = FRN_EPS  # fixed eps (the paper's code: 1e-6); the learned part is added to it
    learned_eps: bool = False  # the paper's learned-eps option: eps = EPSILON + |eps_learned|


def frn_kind(tlu: bool, learned_eps: bool) -> str:
    """Checkpoint kind of an FRN layer: with or without TLU (``tau``), with or without ``eps_learned``."""
    return ("FRN+TLU" if tlu else "FRN") + (" (learned eps)" if learned_eps else "")


for _tlu in (True, False):  # each variant holds its own state keys, so a mismatch is reported, never half-loaded
    for _learned in (True, False):
        declare_kind(frn_kind(_tlu, _learned),
                     {"weight", "bias"} | ({"tau"} if _tlu else set()) | ({"eps_learned"} if _learned else set()))


def _frn_traits(tlu: bool, learned_eps: bool) -> NormTraits:
    return NormTraits(kind=frn_kind(tlu, learned_eps), includes_activation=True)


@register_norm("FRN", options=FRNOptions, traits=lambda o: _frn_traits(True, o.learned_eps),
               module_traits=lambda m: _frn_traits(m.apply_act, m.learn_eps), module_types=(FilterResponseNorm2d,))
def build_frn(channels: int, options: FRNOptions, *, apply_act: bool) -> FilterResponseNorm2d:
    """FRN + TLU where a ReLU would follow (``apply_act``), FRN alone elsewhere; eps from MODEL.FRN."""
    return FilterResponseNorm2d(channels, eps=options.epsilon, learn_eps=options.learned_eps, apply_act=apply_act)


__all__ = ["FilterResponseNorm2d", "FRNOptions", "FRN_EPS", "frn_kind"]
