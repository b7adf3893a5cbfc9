"""Learning-rate schedules, evaluated per step on the host (a Python float per step)."""

from __future__ import annotations

import math


def warmup_cosine(step: int, total_steps: int, warmup_steps: int, peak: float, final: float = 0.0) -> float:
    """Linear warm-up from 0 to ``peak`` over ``warmup_steps``, then cosine to ``final``
    (Mini-SSL's ``cosine_scheduler``, per iteration)."""
    if step < warmup_steps:
        return peak * step / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return final + 0.5 * (peak - final) * (1 + math.cos(math.pi * progress))
