"""Schedules (learning rate, EMA momentum, temperatures), evaluated per step on the host
as Python floats; methods copy theirs into device tensors so a step never recompiles."""

from __future__ import annotations

import math


def warmup_cosine(
    step: int, total_steps: int, warmup_steps: int, peak: float, final: float = 0.0, cosine: bool = True
) -> float:
    """Linear warm-up from 0 to ``peak`` over ``warmup_steps``, then cosine to ``final``
    (Mini-SSL's ``cosine_scheduler``, per iteration), or ``peak`` throughout if not ``cosine``."""
    if step < warmup_steps:
        return peak * step / warmup_steps
    if not cosine:
        return peak
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return final + 0.5 * (peak - final) * (1 + math.cos(math.pi * progress))


def cosine_ramp(base: float, final: float, fraction: float) -> float:
    """From ``base`` at the start to ``final`` at the end of training along a half cosine
    (BYOL's τ = 1 − (1 − τ_base)(cos(πk/K) + 1)/2; ``fraction`` = k/K)."""
    return final - (final - base) * (math.cos(math.pi * min(fraction, 1.0)) + 1) / 2


def linear_ramp(start: float, end: float, fraction: float) -> float:
    """From ``start`` to ``end`` linearly as ``fraction`` goes 0 → 1, ``end`` after that
    (DINO's teacher-temperature warm-up)."""
    return start + (end - start) * min(max(fraction, 0.0), 1.0)
