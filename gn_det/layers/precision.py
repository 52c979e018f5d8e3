"""Norms compute in float32 under autocast: half and bfloat16 inputs are upcast, outputs cast back.

Statistics of 16-bit activations summed in 16 bits lose most of their digits (bfloat16 keeps 8 bits
of mantissa), so the new norms (FRN, EvoNorm, BRN) run their whole computation in float32 with
autocast switched off inside, and return the input's dtype; their parameters and running
statistics stay float32. float32 and float64 inputs are computed in their own dtype.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

LOW_PRECISION = (torch.float16, torch.bfloat16)


def float32_forward(compute: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """``compute(x)`` with autocast off and 16-bit ``x`` upcast to float32; the result has ``x``'s dtype."""
    with torch.autocast(device_type=x.device.type, enabled=False):
        y = compute(x.float() if x.dtype in LOW_PRECISION else x)
    return y if y.dtype == x.dtype else y.to(x.dtype)
