"""Schedules (learning rate, EMA momentum, temperatures), evaluated per step on the host
as Python floats; methods copy theirs into device tensors so a step never recompiles."""

from __future__ import annotations

import math


def warmup_cosine(
    step: int, total_steps: int, warmup_steps: int, peak: float, final: float = 0.0, cosine: bool = True,
    start: float = 0.0,
) -> float:
    """Linear warm-up from ``start`` at step 0 to ``peak`` at step ``warmup_steps`` − 1, then
    cosine from ``peak`` to ``final`` (or ``peak`` throughout if not ``cosine``), per step.

    Mini-SSL's ``cosine_scheduler`` warms up along ``np.linspace(0, peak, W)``, solo-learn's
    ``LinearWarmupCosineAnnealingLR`` from its ``warmup_start_lr`` 3e-5 in W − 1 equal steps,
    and DINO's official schedule along ``np.linspace(start, peak, W)``: all three reach the
    peak at step W − 1, and the cosine starts from the peak at step W."""
    if step < warmup_steps:
        return start + (peak - start) * step / max(1, warmup_steps - 1)
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
