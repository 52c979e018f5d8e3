"""The one entry point for normalization layers: ``NORM_REGISTRY``, ``NormOptions`` and ``get_norm``.

Every place in a detector that takes a norm (stem, blocks, shortcuts, FPN, RPN head, box and mask
heads) calls ``get_norm(name, channels, options)``, so a norm name means the same everywhere.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Set, Type, Union

from torch import nn

from gn_det.utils.registry import Registry

NORM_REGISTRY = Registry("NORM")
NORM_REGISTRY.__doc__ = """
Registry of normalization layers. An entry is ``builder(num_channels: int, options: NormOptions)
-> nn.Module`` acting on (N, C, H, W) tensors (and (N, C) for norms that allow it). Register with
``@NORM_REGISTRY.register("MyNorm")``; the name is then valid in every config key that takes a norm.
"""


@dataclass(frozen=True)
class NormOptions:
    """Options of the registered norms; the config layer fills them from MODEL.GN / MODEL.SN / MODEL.BN.

    Defaults are the papers': GN uses 32 groups (Wu & He 2018, Sec. 3.1) and eps 1e-5; BN/SN use
    PyTorch's momentum convention (new = (1 - momentum) * old + momentum * batch).
    """

    gn_num_groups: int = 32  # GN paper Sec. 3.1 / Detectron GROUP_NORM.NUM_GROUPS
    gn_dim_per_gp: int = -1  # channels per group (Detectron GROUP_NORM.DIM_PER_GP); -1 uses gn_num_groups
    gn_eps: float = 1e-5  # Detectron GROUP_NORM.EPSILON
    bn_momentum: float = 0.1  # torch.nn.BatchNorm2d default
    bn_eps: float = 1e-5  # torch.nn.BatchNorm2d default; FrozenBN uses it too
    sn_use_bn: bool = True  # SN's BN branch; False makes SN batch-free (1 image per GPU)
    sn_momentum: float = 0.1  # PyTorch convention for SN's running BN statistics
    sn_eps: float = 1e-5
    sn_freeze_stats: bool = False  # fine-tuning: SN's BN branch uses its running statistics in training too
    # Config key that set the GN options, quoted in errors (e.g. "MODEL.GN.NUM_GROUPS").
    gn_groups_key: str = "MODEL.GN.NUM_GROUPS"


NormSpec = Union[str, None]

# Types get_norm has built, so is_norm() also recognizes norms users register themselves.
BUILT_NORM_TYPES: Set[Type[nn.Module]] = set()


class NormChannelsError(ValueError):
    """A norm cannot be built for this channel count; get_norm prefixes the config key and norm name.

    ``requirement`` reads after "needs", e.g. "channels divisible by MODEL.GN.NUM_GROUPS=32, got 250".
    """

    def __init__(self, requirement: str, remedy: str = "") -> None:
        self.requirement = requirement
        self.remedy = remedy
        super().__init__(self.format("norm"))

    def format(self, prefix: str) -> str:
        """The full message with ``prefix`` (e.g. "MODEL.FPN.NORM='GN'") as its subject."""
        return f"{prefix} needs {self.requirement}" + (f"; {self.remedy}" if self.remedy else "")

    def with_message(self, prefix: str) -> "NormChannelsError":
        """This error with ``prefix`` as the subject of its message."""
        self.args = (self.format(prefix),)
        return self


def get_norm(
    name: NormSpec,
    channels: int,
    options: Optional[NormOptions] = None,
    *,
    key: str = "norm",
    zero_init: bool = False,
) -> Optional[nn.Module]:
    """Build the norm registered as ``name`` for ``channels`` channels; ``""``/None means no norm (None).

    ``key`` is the config key the name came from, quoted in errors (unknown name, bad channels).
    ``zero_init`` sets the affine weight to zero (the last norm of a residual block, Goyal et al. 2017).
    """
    if name is None or name == "":
        return None
    if not isinstance(name, str):
        raise TypeError(f"{key} must be a norm name (str) or ''/None for no norm, got {name!r}")
    builder = NORM_REGISTRY.get(name, key=key)
    try:
        module = builder(channels, options or NormOptions())
    except NormChannelsError as e:
        raise NormChannelsError(e.requirement, e.remedy).with_message(f"{key}={name!r}") from None
    BUILT_NORM_TYPES.add(type(module))
    if zero_init:
        weight = getattr(module, "weight", None)
        if weight is None:
            raise ValueError(f"{key}={name!r} has no affine weight to zero-initialize")
        nn.init.zeros_(weight)
    return module
