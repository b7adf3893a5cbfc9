"""The precision losses compute in."""

from __future__ import annotations

import torch
from torch import Tensor


def at_least_fp32(x: Tensor) -> Tensor:
    """``x`` in fp32 if it is in a lower precision (bf16/fp16 autocast outputs, integer
    boxes), else as it is: a float64 run (the reference tests) stays in float64."""
    return x.to(torch.promote_types(x.dtype, torch.float32))
