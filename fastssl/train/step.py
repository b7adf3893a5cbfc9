"""One optimisation step, the one the loop, ``tools/profile.py`` and the benchmarks all take.

Its stages are named, so a profiler times them by passing ``stage`` (a context manager
per stage name) instead of re-implementing the step: ``forward+loss`` (the lr, the
method's ``before_step``, its forward pass and the online probe's), ``backward``, and
``optimiser`` (gradient edits, both optimisers, memories, EMA). Nothing here reads a
device value on the host: metrics are added to a ``Meter`` on the device.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import torch
from torch import Tensor

from fastssl.distributed import sum_over_processes, world_size
from fastssl.eval.collapse import collapse_metrics
from fastssl.methods.base import MethodOutput, Progress
from fastssl.train.build import Parts
from fastssl.train.schedule import warmup_cosine
from pipelines.batch import ViewBatch

STAGES = ("forward+loss", "backward", "optimiser")


class Meter:
    """Means of device scalars over the steps that reported them, read (one
    synchronisation) only when logged."""

    def __init__(self) -> None:
        self.sums: dict[str, Tensor] = {}
        self.counts: dict[str, int] = {}

    def add(self, values: dict[str, Tensor]) -> None:
        for name, value in values.items():
            value = value.detach().float()
            self.sums[name] = self.sums[name] + value if name in self.sums else value
            self.counts[name] = self.counts.get(name, 0) + 1

    def read(self) -> dict[str, float]:
        return self.read_everywhere(None)[0]

    def read_everywhere(self, stop: int | None) -> tuple[dict[str, float], int | None]:
        """The means over the window and over every process, and the stop they agree on:
        ``stop`` is this process's request (a signal's number, 0 for another reason, None
        for none), the result what the processes that asked asked for (None: go on). One
        all-reduce and one read for both, so processes agree on a stop step without a
        collective in every step. Starts the next window."""
        names = list(self.sums)
        device = next(iter(self.sums.values())).device if self.sums else torch.device("cpu")
        means = [self.sums[n] / self.counts[n] for n in names]
        request = torch.tensor([float(stop or 0), float(stop is not None)], device=device)
        total = sum_over_processes(torch.cat([torch.stack(means), request]) if means else request)
        values = (total[:-2] / world_size()).tolist()
        code, asking = total[-2:].tolist()
        self.sums, self.counts = {}, {}
        return dict(zip(names, values, strict=True)), round(code / asking) if asking else None

    def state(self) -> dict[str, Any]:
        """The open window, for a checkpoint (read from the device once)."""
        return {"sums": {n: float(v) for n, v in self.sums.items()}, "counts": dict(self.counts)}

    def restore(self, state: dict[str, Any], device: torch.device) -> None:
        self.sums = {n: torch.tensor(v, device=device) for n, v in state["sums"].items()}
        self.counts = dict(state["counts"])


def untimed(name: str) -> AbstractContextManager:
    return contextlib.nullcontext()


def learning_rate(parts: Parts, progress: Progress) -> float:
    """The scheduled lr of this step: linear warm-up from ``--optim.warmup-start-lr``, then
    cosine to 0 or constant."""
    o, steps = parts.cfg.optim, parts.steps_per_epoch
    warmup = round(o.warmup_epochs * steps)
    return warmup_cosine(progress.global_step, o.epochs * steps, warmup, o.lr, cosine=o.schedule == "cosine",
                         start=o.warmup_start_lr)


def train_step(
    parts: Parts, batch: ViewBatch, progress: Progress, meter: Meter, diagnose: bool = False,
    stage: Callable[[str], AbstractContextManager] = untimed,
) -> MethodOutput:
    """One step of ``parts``'s method on ``batch``; ``diagnose`` also measures collapse (a
    logging step). Returns the method's output (its tensors still on the device)."""
    acc, method, o = parts.accelerator, parts.method, parts.cfg.optim
    if not parts.cfg.run.channels_last:  # the NCHW baseline of the benchmarks
        batch = dataclasses.replace(batch, views={k: v.contiguous() for k, v in batch.views.items()})
    with stage("forward+loss"):
        lr = learning_rate(parts, progress)
        for group in parts.optimizer.param_groups:
            group["lr"] = o.lr if group.get("fixed_lr", False) else lr
        if parts.graphed:
            # One step is one CUDA-graph generation whatever order the method calls its
            # networks in (the heuristic, "a new step at each call without a pending
            # backward", would split a step whose teacher runs before the student).
            torch.compiler.cudagraph_mark_step_begin()
        method.before_step(progress)
        with acc.autocast():
            out = method(batch)
            probe_loss, probe_acc = parts.probe_call(out.features, batch.labels)
    if diagnose and out.embedding is not None:
        meter.add(collapse_metrics(out.embedding))
    with stage("backward"):
        acc.backward(out.loss + probe_loss)
    with stage("optimiser"):
        method.after_backward()
        parts.optimizer.step()
        parts.probe_optimizer.step()
        parts.optimizer.zero_grad(set_to_none=True)
        parts.probe_optimizer.zero_grad(set_to_none=True)
        method.push_memories(out)
        method.after_optimizer_step(progress)
    meter.add({"loss": out.loss, "probe_loss": probe_loss, "probe_train_acc": probe_acc, **out.metrics})
    return out
