"""BN estimation shift (Huang et al., CVPR 2022, "Delving into the Estimation Shift of Batch Normalization
in a Network"): how far each BN-like layer's running statistics are from the statistics its input
actually has on a dataset when the trained model runs in eval mode.

For every norm whose traits say running_stats (BN, SyncBN, FrozenBN, SN with its BN branch, any
registered norm declaring them) and that owns ``running_mean``/``running_var``, we hook its input, accumulate per-channel sums of x and x^2 over every sample and position in float64,
and take the expected mean ``E[x]`` and the population variance ``E[x^2] - E[x]^2`` over the whole
dataset (the paper's expected statistics). The shift magnitudes are ``||running_mean - E[x]||_2``
and ``||running_var - Var[x]||_2``. Layers are listed in the order the forward pass reaches them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import torch
from torch import nn

from gn_det.layers import norm_name, norm_traits

from .formatting import Column, Table
from .naming import stage_of


@dataclass(frozen=True)
class ShiftRow:
    """One BN-like layer's estimation shift: l2 norms of (running - expected) mean and variance."""

    index: int
    name: str
    stage: str
    kind: str
    channels: int
    mean_shift: float
    var_shift: float

    @property
    def mean_shift_rms(self) -> float:
        """The mean shift per channel (l2 norm / sqrt(C)), comparable across layers of different width."""
        return self.mean_shift / max(self.channels, 1) ** 0.5

    @property
    def var_shift_rms(self) -> float:
        """The variance shift per channel (l2 norm / sqrt(C))."""
        return self.var_shift / max(self.channels, 1) ** 0.5


def layer_kind(module: nn.Module) -> Optional[str]:
    """The norm's registered name ("BN", "SyncBN", "FrozenBN", "SN", ...) for a layer whose traits say it
    keeps running statistics and that holds ``running_mean`` and ``running_var``; else None.

    SN counts only with its BN branch: batch-free SN declares no running statistics.
    """
    traits = norm_traits(module)
    if traits is None or not traits.running_stats:
        return None
    mean = getattr(module, "running_mean", None)
    var = getattr(module, "running_var", None)
    if not isinstance(mean, torch.Tensor) or not isinstance(var, torch.Tensor):
        return None
    return norm_name(module)


def bn_like_layers(model: nn.Module) -> List[Tuple[str, nn.Module]]:
    """(name, module) of every layer with running statistics, in module registration order."""
    return [(name, m) for name, m in model.named_modules() if layer_kind(m) is not None]


class _InputMoments:
    """Forward-pre-hook state: per-channel float64 sums of x and x^2 and the element count."""

    def __init__(self) -> None:
        self.sum: Optional[torch.Tensor] = None
        self.sum_sq: Optional[torch.Tensor] = None
        self.count = 0

    def __call__(self, module: nn.Module, inputs: Tuple[Any, ...]) -> None:
        x = inputs[0]
        if not isinstance(x, torch.Tensor) or x.dim() < 2 or x.numel() == 0:
            return
        x = x.detach().to(torch.float64).transpose(0, 1).reshape(x.shape[1], -1)
        s, s2 = x.sum(dim=1), (x * x).sum(dim=1)
        self.sum = s if self.sum is None else self.sum + s
        self.sum_sq = s2 if self.sum_sq is None else self.sum_sq + s2
        self.count += x.shape[1]

    def mean_var(self) -> Tuple[torch.Tensor, torch.Tensor]:
        assert self.sum is not None and self.sum_sq is not None  # internal: only called when count > 0
        mean = self.sum / self.count
        var = (self.sum_sq / self.count - mean * mean).clamp_min(0.0)
        return mean, var


def measure_input_statistics(
    model: nn.Module,
    batches: Iterable[Any],
    forward: Optional[Callable[[nn.Module, Any], Any]] = None,
) -> Dict[str, Tuple[torch.Tensor, torch.Tensor]]:
    """Expected (mean, population variance) of each BN-like layer's input over ``batches``, in eval mode.

    ``forward(model, batch)`` runs one batch (default ``model(batch)``). The result is ordered by the
    first forward call that reached each layer; layers the data never reached are left out.
    """
    forward = forward or (lambda m, b: m(b))
    moments: Dict[str, _InputMoments] = {}
    order: List[str] = []
    handles = []

    def make_hook(name: str, state: _InputMoments) -> Callable:
        def hook(module: nn.Module, inputs: Tuple[Any, ...]) -> None:
            if name not in order:
                order.append(name)
            state(module, inputs)

        return hook

    was_training = model.training
    model.eval()
    try:
        for name, module in bn_like_layers(model):
            moments[name] = _InputMoments()
            handles.append(module.register_forward_pre_hook(make_hook(name, moments[name])))
        with torch.no_grad():
            for batch in batches:
                forward(model, batch)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return {name: moments[name].mean_var() for name in order if moments[name].count > 0}


def estimation_shift(
    model: nn.Module, expected: Dict[str, Tuple[torch.Tensor, torch.Tensor]]
) -> List[ShiftRow]:
    """Per layer (in ``expected``'s order): l2 norm of running minus expected mean and variance."""
    modules = dict(model.named_modules())
    rows = []
    for index, (name, (mean, var)) in enumerate(expected.items()):
        module = modules[name]
        running_mean = module.running_mean.detach().to(torch.float64).flatten()
        running_var = module.running_var.detach().to(torch.float64).flatten()
        rows.append(
            ShiftRow(
                index=index,
                name=name,
                stage=stage_of(name),
                kind=layer_kind(module) or "",
                channels=running_mean.numel(),
                mean_shift=float(torch.linalg.vector_norm(running_mean - mean.to(running_mean.device))),
                var_shift=float(torch.linalg.vector_norm(running_var - var.to(running_var.device))),
            )
        )
    return rows


def shift_table(rows: Sequence[ShiftRow]) -> Table:
    """One line per BN-like layer in network order: kind, channels, mean and variance shift."""
    columns = [
        Column("index", "#", None, True),
        Column("stage", "stage"),
        Column("name", "layer"),
        Column("kind", "kind"),
        Column("channels", "C", None, True),
        Column("mean_shift", "||mean shift||", 4, True),
        Column("var_shift", "||var shift||", 4, True),
        Column("mean_shift_rms", "mean shift/sqrt(C)", 4, True),
        Column("var_shift_rms", "var shift/sqrt(C)", 4, True),
    ]
    table_rows = [dict(vars(r), mean_shift_rms=r.mean_shift_rms, var_shift_rms=r.var_shift_rms) for r in rows]
    return Table(columns=columns, rows=table_rows, title="BN estimation shift")
