"""Input checks shared by gn_det's 2D norms, with messages that name the layer and the shape."""
from __future__ import annotations

from typing import Optional

from torch import Tensor, nn

from .norm import batch_free_norms


def check_input_4d(module: nn.Module, x: Tensor) -> None:
    """Raise ValueError unless ``x`` is (N, C, H, W) with the module's channel count."""
    if x.dim() != 4:
        raise ValueError(
            f"{type(module).__name__} expects a 4D (N, C, H, W) input, got a {x.dim()}D input of shape "
            f"{tuple(x.shape)}"
        )
    channels = getattr(module, "num_features", None)
    if channels is not None and x.shape[1] != channels:
        raise ValueError(
            f"{type(module).__name__} was built for {channels} channels, got an input of shape {tuple(x.shape)}"
        )


def check_batch_statistics(module: nn.Module, count: int, got: str) -> None:
    """Raise ValueError when batch statistics would be computed from one value per channel.

    The message names the norms that work at batch size 1, generated from the registered traits.
    """
    if count == 1:
        raise ValueError(
            f"{type(module).__name__} in training needs more than 1 value per channel for its batch "
            f"statistics, got {got}; at batch size 1 use {batch_free_norms()}"
        )


def values_per_channel(x) -> int:
    """N * H * W of an (N, C, H, W) tensor: the values one channel's batch statistics see."""
    return x.shape[0] * x.shape[2] * x.shape[3]


def empty_output(x: Tensor, *params: Optional[Tensor]) -> Tensor:
    """The output for an input without values (0 images: a mask head without RoIs): ``x``'s empty shape,
    connected to every parameter so each gets a zero gradient (DDP expects a gradient for all of them)."""
    return x + sum(p.sum() * 0 for p in params if p is not None)
