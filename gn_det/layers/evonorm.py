"""EvoNorm-S0 and EvoNorm-B0 (Liu, Brock, Simonyan & Le, arXiv 2004.02967): norm and activation in one.

- S0 (batch-free): ``y = x * sigmoid(v * x) / group_std(x) * gamma + beta``, with ``group_std`` the
  per-sample standard deviation over each group of channels and H, W (as GN's, without centering x).
- B0 (batch-dependent): ``y = x / max(batch_std(x), v * x + instance_std(x)) * gamma + beta``, with
  ``batch_std`` over (N, H, W) per channel in training and from the running variance in eval, and
  ``instance_std`` over (H, W) per sample and channel.
Every std is ``sqrt(biased variance + eps)``. Both replace norm + ReLU. With ``apply_act=False`` the
layer is the affine ``x * gamma + beta`` alone, exactly as the authors' code does where the network
has no ReLU (tensorflow/tpu models/official/resnet/resnet_model.py ``evonorm(nonlinearity=False)``:
"apply an affine transform only"; the paper's appendix code and timm's EvoNorm2dS0/B0 do the
same). The EvoNorms were searched as norm-activation pairs and published results use this form, so
gn_det keeps it rather than invent a normalization-only variant.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from .fused import channel_moments, channel_sums
from .norm import NormChannelsError, register_norm
from .options import FamilyOptions
from .precision import float32_forward
from .shapes import check_batch_statistics, check_input_4d, empty_output, values_per_channel
from .traits import NormTraits, declare_kind

# Defaults of the authors' code (tensorflow/tpu resnet_model.py): EPSILON = 1e-5,
# MOVING_AVERAGE_DECAY = 0.9 (= PyTorch momentum 0.1), num_groups=32 (the paper's S0 group count).
EVONORM_EPS = 1e-5
EVONORM_MOMENTUM = 0.1
EVONORM_GROUPS = 32


def _per_sample_channel(x: Tensor) -> Tensor:
    """(N, C, H, W) viewed as (1, N*C, H*W): "channel" of gn_det.layers.fused becomes (sample, channel)."""
    n, c, h, w = x.shape
    return x.view(1, n * c, h * w)


def _sums_with_x(grad: Tensor, x: Tensor) -> Tuple[Tensor, Tensor]:
    """Per (n, c): ``(sum_hw(grad * x), sum_hw(grad))``, each (N, C), in one pass."""
    n, c = x.shape[:2]
    dot, total = channel_sums(_per_sample_channel(grad), _per_sample_channel(x), x.new_zeros(n * c))
    return dot.view(n, c), total.view(n, c)


class _EvoNormS0Function(torch.autograd.Function):
    """S0 forward in one allocation (statistics from one fused reduction); backward in closed form.

    ``y = x * sigmoid(v * x) * k + beta`` with ``k = gamma * inv_g`` and ``inv_g = (var_g + eps)^-1/2`` per
    (sample, group). Saves x and the (N, G) statistics only; the sigmoid is recomputed backward.
    """

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor, v: Tensor, groups: int, eps: float) -> Tensor:
        n, c, h, w = x.shape
        mean_c, var_c = (t.view(n, groups, c // groups) for t in channel_moments(_per_sample_channel(x)))
        mean_g = mean_c.mean(2, keepdim=True)  # (N, G, 1): pool the channels' moments into the group's
        inv_g = torch.rsqrt(var_c.mean(2) + (mean_c - mean_g).square().mean(2) + eps)  # (N, G)
        k = inv_g.repeat_interleave(c // groups, dim=1) * weight  # (N, C)
        y = x * v.view(1, c, 1, 1)
        y.sigmoid_().mul_(x).mul_(k.view(n, c, 1, 1)).add_(bias.view(1, c, 1, 1))
        ctx.save_for_backward(x, weight, v, inv_g, mean_g.squeeze(2))
        ctx.groups = groups
        return y

    @staticmethod
    def backward(ctx, dy: Tensor) -> Tuple[Optional[Tensor], ...]:
        x, weight, v, inv_g, mean_g = ctx.saved_tensors
        n, c, h, w = x.shape
        per_group = c // ctx.groups
        inv_c = inv_g.repeat_interleave(per_group, dim=1)  # (N, C)
        k = (inv_c * weight).view(n, c, 1, 1)
        sig = x * v.view(1, c, 1, 1)
        sig.sigmoid_()
        gated = dy * sig  # dy * s
        dk, _ = _sums_with_x(gated, x)  # sum_hw(dy * x * s): gradient of k
        t = torch.addcmul(gated, gated, sig, value=-1.0, out=sig).mul_(x)  # dy * s * (1 - s) * x, in sig's buffer
        t_x, _ = _sums_with_x(t, x)
        d_v = (k.view(n, c) * t_x).sum(0)
        dx = None
        if ctx.needs_input_grad[0]:
            # through the gate: k * (dy * s + v * dy * s * (1 - s) * x); through var_g: 2 dvar_g (x - mean_g) / M_g
            dx = gated.addcmul_(t, v.view(1, c, 1, 1)).mul_(k)
            d_var_g = -0.5 * inv_g.pow(3) * (dk * weight).view(n, ctx.groups, per_group).sum(2)
            coef = (d_var_g * (2.0 / (per_group * h * w))).repeat_interleave(per_group, dim=1)
            offset = coef * mean_g.repeat_interleave(per_group, dim=1)
            dx.addcmul_(x, coef.view(n, c, 1, 1)).sub_(offset.view(n, c, 1, 1))
        return dx, (dk * inv_c).sum(0), dy.sum((2, 3)).sum(0), d_v, None, None


class _EvoNormB0Function(torch.autograd.Function):
    """B0 forward in one allocation (statistics from one fused reduction); backward in closed form.

    ``y = x / den * gamma + beta`` with ``den = max(sb, v * x + si)``, ``sb`` per channel (the batch's,
    or the running one in eval) and ``si`` per (n, c). Saves x, the statistics and which side of the
    max won (1 byte per value); ``den`` is recomputed backward.
    """

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor, v: Tensor, running_var: Tensor,
                eps: float, momentum: float, training: bool) -> Tensor:
        n, c, h, w = x.shape
        mean_i, var_i = (t.view(n, c) for t in channel_moments(_per_sample_channel(x)))
        mean_b = None
        if training:  # batch moments pooled from the per-sample ones (all samples hold H*W values)
            mean_b = mean_i.mean(0)
            var_b = var_i.mean(0) + (mean_i - mean_b).square().mean(0)
            count = n * h * w
            with torch.no_grad():  # PyTorch's convention: new = (1 - m) * old + m * unbiased batch var
                running_var.mul_(1 - momentum).add_(var_b.to(running_var.dtype), alpha=momentum * count / (count - 1))
        else:
            var_b = running_var.to(x.dtype)
        sb = torch.sqrt(var_b + eps)
        si = torch.sqrt(var_i + eps)
        den = torch.addcmul(si.view(n, c, 1, 1), x, v.view(1, c, 1, 1))
        batch_side = den < sb.view(1, c, 1, 1)  # where max() picks the batch std
        den.clamp_(min=sb.view(1, c, 1, 1))
        y = torch.div(x, den, out=den).mul_(weight.view(1, c, 1, 1)).add_(bias.view(1, c, 1, 1))
        ctx.save_for_backward(x, weight, v, sb, si, mean_i, mean_b, batch_side)
        return y

    @staticmethod
    def backward(ctx, dy: Tensor) -> Tuple[Optional[Tensor], ...]:
        x, weight, v, sb, si, mean_i, mean_b, batch_side = ctx.saved_tensors
        n, c, h, w = x.shape
        g = weight.view(1, c, 1, 1)
        inv_den = torch.addcmul(si.view(n, c, 1, 1), x, v.view(1, c, 1, 1))
        inv_den.clamp_(min=sb.view(1, c, 1, 1)).reciprocal_()
        a = dy * inv_den  # dy / den
        a_x, _ = _sums_with_x(a, x)  # sum_hw(dy * x / den): gradient of gamma
        b = inv_den.mul_(a).mul_(x)  # dy * x / den^2; d loss / d den = -gamma * b
        b_all = b.sum((2, 3))
        b.masked_fill_(batch_side, 0.0)  # keep the instance side: den = v * x + si there
        b_x, b_inst = _sums_with_x(b, x)
        d_si = -weight * b_inst  # (N, C)
        d_v = -(weight * b_x.sum(0))
        dx = None
        if ctx.needs_input_grad[0]:
            dx = a.mul_(g).addcmul_(b, -(g * v.view(1, c, 1, 1)))
            coef = d_si / (si * (h * w))  # 2 dvar_i / (H*W) with dvar_i = d_si / (2 si)
            offset = coef * mean_i
            if mean_b is not None:  # batch statistics: their gradient reaches x too
                d_sb = -weight * (b_all - b_inst).sum(0)  # (C,)
                coef_b = d_sb / (sb * (n * h * w))
                coef = coef + coef_b
                offset = offset + coef_b * mean_b
            dx.addcmul_(x, coef.view(n, c, 1, 1)).sub_(offset.view(n, c, 1, 1))
        return dx, a_x.sum(0), dy.sum((2, 3)).sum(0), d_v, None, None, None, None


class EvoNorm2dS0(nn.Module):
    """EvoNorm-S0 over (N, C, H, W) with ``groups`` channel groups; parameters ``weight``, ``bias``, ``v`` (C).

    Traits: no running statistics; batch-free (train = eval, fine at 1 image per GPU); includes the
    activation (no ReLU after it). State keys: weight, bias, v (v only with apply_act).
    """

    def __init__(self, num_features: int, groups: int = EVONORM_GROUPS, eps: float = EVONORM_EPS,
                 apply_act: bool = True) -> None:
        super().__init__()
        if apply_act and (groups <= 0 or num_features % groups != 0):  # the affine alone has no groups
            raise NormChannelsError(f"channels divisible by groups={groups}, got {num_features}",
                                    f"set groups to a divisor of {num_features}")
        if eps <= 0:
            raise ValueError(f"EvoNorm2dS0 needs eps > 0 (the paper uses {EVONORM_EPS}), got {eps}")
        self.num_features = num_features
        self.groups = groups
        self.eps = eps
        self.apply_act = apply_act
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.v = nn.Parameter(torch.ones(num_features)) if apply_act else None  # authors' code: ones

    def forward(self, x: Tensor) -> Tensor:
        check_input_4d(self, x)
        return float32_forward(self._forward, x)

    def _forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        if x.numel() == 0:
            return empty_output(x, *self.parameters())
        if self.v is None:  # the affine alone (apply_act=False)
            return torch.addcmul(self.bias.view(1, c, 1, 1), x, self.weight.view(1, c, 1, 1))
        return _EvoNormS0Function.apply(x.contiguous(), self.weight, self.bias, self.v, self.groups, self.eps)

    def extra_repr(self) -> str:
        return f"{self.num_features}, groups={self.groups}, eps={self.eps}, apply_act={self.apply_act}"


class EvoNorm2dB0(nn.Module):
    """EvoNorm-B0 over (N, C, H, W); parameters ``weight``, ``bias``, ``v`` (C), buffer ``running_var`` (C).

    Traits (with apply_act): keeps running statistics (``running_var`` only: B0 never centers, so
    there is no running mean; PyTorch momentum convention and unbiased variance, as BatchNorm2d);
    batch-dependent in training (eval uses ``running_var``); includes the activation. State keys:
    weight, bias, v, running_var. With apply_act=False it is the affine alone: batch-free, no
    running statistics, state keys weight, bias.
    """

    def __init__(self, num_features: int, eps: float = EVONORM_EPS, momentum: float = EVONORM_MOMENTUM,
                 apply_act: bool = True) -> None:
        super().__init__()
        if eps <= 0:
            raise ValueError(f"EvoNorm2dB0 needs eps > 0 (the paper uses {EVONORM_EPS}), got {eps}")
        if not 0.0 < momentum <= 1.0:
            raise ValueError(f"EvoNorm2dB0 momentum should be in (0, 1], got {momentum}")
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.apply_act = apply_act
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.v = nn.Parameter(torch.ones(num_features)) if apply_act else None
        self.register_buffer("running_var", torch.ones(num_features) if apply_act else None)

    def reset_running_stats(self) -> None:
        """Running variance back to 1 (its initial value, as the authors' moving_variance)."""
        if self.running_var is not None:
            self.running_var.fill_(1.0)

    def forward(self, x: Tensor) -> Tensor:
        check_input_4d(self, x)
        if self.v is not None and self.training:
            check_batch_statistics(self, values_per_channel(x), f"an input of shape {tuple(x.shape)}")
        return float32_forward(self._forward, x)

    def _forward(self, x: Tensor) -> Tensor:
        n, c = x.shape[:2]
        if x.numel() == 0:  # nothing to learn from; the running variance stays
            return empty_output(x, *self.parameters())
        if self.v is None:  # the affine alone (apply_act=False)
            return torch.addcmul(self.bias.view(1, c, 1, 1), x, self.weight.view(1, c, 1, 1))
        return _EvoNormB0Function.apply(x.contiguous(), self.weight, self.bias, self.v, self.running_var,
                                        self.eps, self.momentum, self.training)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, apply_act={self.apply_act}"


@dataclass(frozen=True)
class EvoNormOptions(FamilyOptions):
    """Options of EvoNorm-S0 and -B0: config node MODEL.EVONORM (NUM_GROUPS, EPSILON, MOMENTUM)."""

    config_node = "MODEL.EVONORM"
    num_groups: int = EVONORM_GROUPS  # S0's channel groups (the paper's 32); the layer's ``groups``
    epsilon: float = EVONORM_EPS  # the authors' code: 1e-5
    momentum: float = EVONORM_MOMENTUM  # B0's running variance, PyTorch convention (authors' decay 0.9)


# Kinds: the affine alone (apply_act=False, no ReLU at that position) holds weight and bias only.
EVONORM_S0_KIND, EVONORM_B0_KIND, EVONORM_AFFINE_KIND = "EvoNorm-S0", "EvoNorm-B0", "EvoNorm affine"
declare_kind(EVONORM_AFFINE_KIND, {"weight", "bias"})
S0_TRAITS = NormTraits(kind=EVONORM_S0_KIND, includes_activation=True)
B0_TRAITS = NormTraits(kind=EVONORM_B0_KIND, running_stats=True, batch_dependent=True, includes_activation=True)
AFFINE_TRAITS = NormTraits(kind=EVONORM_AFFINE_KIND, includes_activation=True)


@register_norm("EvoNormS0", options=EvoNormOptions, traits=S0_TRAITS, state_keys=("weight", "bias", "v"),
               module_traits=lambda m: S0_TRAITS if m.apply_act else AFFINE_TRAITS, module_types=(EvoNorm2dS0,))
def build_evonorm_s0(channels: int, options: EvoNormOptions, *, apply_act: bool) -> EvoNorm2dS0:
    """EvoNorm-S0 (MODEL.EVONORM.NUM_GROUPS groups) where a ReLU would follow, the affine alone elsewhere."""
    try:
        return EvoNorm2dS0(channels, groups=options.num_groups, eps=options.epsilon, apply_act=apply_act)
    except NormChannelsError:  # the layer's group check, restated with the config key to change
        key = EvoNormOptions.key("num_groups")
        raise NormChannelsError(f"channels divisible by {key}={options.num_groups}, got {channels}",
                                f"set {key} to a divisor of {channels}") from None


@register_norm("EvoNormB0", options=EvoNormOptions, traits=B0_TRAITS, state_keys=("weight", "bias", "v", "running_var"),
               module_traits=lambda m: B0_TRAITS if m.apply_act else AFFINE_TRAITS, module_types=(EvoNorm2dB0,))
def build_evonorm_b0(channels: int, options: EvoNormOptions, *, apply_act: bool) -> EvoNorm2dB0:
    """EvoNorm-B0 (running variance momentum from MODEL.EVONORM) where a ReLU would follow, the affine alone elsewhere."""
    return EvoNorm2dB0(channels, eps=options.epsilon, momentum=options.momentum, apply_act=apply_act)


__all__ = ["EvoNorm2dS0", "EvoNorm2dB0", "EvoNormOptions", "EVONORM_EPS", "EVONORM_MOMENTUM", "EVONORM_GROUPS"]
