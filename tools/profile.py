"""Where a training step's time goes: each stage alone, then the whole step.

    python tools/profile.py --data data/cifar10 [data/cifar10-jpeg …] --recipe mocov2 [--trace trace.json]

Builds the recipe's real run (``fastssl.train.build``) for a converted data set (its format
picks the backend) and times, over ``--steps`` steps after a warm-up: read/decode (the
backend's fetch), view making, and the named stages of the loop's own ``train_step``
(forward with the loss, backward, optimiser step with the method's hooks), then the whole
step as the loop runs it. CUDA work is timed with CUDA events, CPU work with the host
clock. Prints a table, names the slowest stage, writes JSON, and can export a
``torch.profiler`` trace of a few whole steps (open it in Perfetto or chrome://tracing).

Several ``--data`` (the same images in several formats) are profiled in one run, with a
summary of the data stage (read/decode + views) per backend and, beside it, the usual
baseline: a torchvision ``DataLoader`` whose workers decode with PIL and make the same two
views image by image.
"""

from __future__ import annotations

import contextlib
import json
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

# This script's folder must not stay first on the path: its name would shadow the standard
# library's ``profile`` module, which ``cProfile`` (imported by torch) needs.
sys.path[0] = str(Path(__file__).resolve().parents[1])

import torch  # noqa: E402

from fastssl.cli import fail, parse  # noqa: E402
from fastssl.methods.base import Progress  # noqa: E402
from fastssl.recipes import UnknownRecipe, get  # noqa: E402
from fastssl.train.build import Parts, RunError, build  # noqa: E402
from fastssl.train.step import STAGES, Meter, train_step  # noqa: E402
from pipelines.batch import ViewBatch  # noqa: E402
from pipelines.dataset import DatasetError  # noqa: E402
from pipelines.loader import Loader, epoch_permutation  # noqa: E402
from pipelines.reference import PilTwoViews  # noqa: E402

if TYPE_CHECKING:
    from pipelines.formats.jpeg import JpegSplit
    from pipelines.formats.tensor import TensorSplit

PROGRAM = "profile.py"


@dataclass(frozen=True)
class ProfileConfig:
    data: tuple[Path, ...]  # one or more converted data sets (e.g. one per format)
    recipe: str = "mocov2"  # a recipe's name (recipes/<recipe>.py)
    preset: str = "cifar10"
    batch_size: int | None = None  # default: the recipe's
    width: int | None = None  # ResNet first-stage channels; default: the recipe's
    steps: int = 5  # timed steps per stage, after one warm-up
    out: Path = Path("profile.json")
    trace: Path | None = None  # also write a torch.profiler Chrome trace of 2 steps here
    baseline: bool = True  # also time a torchvision DataLoader + PIL on the first data set
    data_only: bool = False  # time read/decode and views only (no model: large images on a CPU)
    workers: int = 2  # the baseline DataLoader's worker processes


class Timer:
    """Milliseconds of a call, and its result: CUDA events on a GPU, the host clock on the CPU."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def __call__(self, work: Callable[..., Any], *args: Any) -> tuple[float, Any]:
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            result = work(*args)
            end.record()
            end.synchronize()
            return start.elapsed_time(end), result
        begin = time.perf_counter()
        result = work(*args)
        return 1000 * (time.perf_counter() - begin), result


class StageClock:
    """``train_step``'s ``stage``: times each named stage of a step, with CUDA events on a
    GPU (read once the step is done) and the host clock on the CPU."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.marks: dict[str, tuple[Any, Any]] = {}

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start: Any
        end: Any
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            yield
            end.record()
        else:
            start = time.perf_counter()
            yield
            end = time.perf_counter()
        self.marks[name] = (start, end)

    def read(self) -> dict[str, float]:
        """Milliseconds per stage of the last step."""
        if self.cuda:
            torch.cuda.synchronize()
            return {name: start.elapsed_time(end) for name, (start, end) in self.marks.items()}
        return {name: 1000 * (end - start) for name, (start, end) in self.marks.items()}


def build_run(cfg: ProfileConfig, data: Path) -> Parts:
    try:
        recipe = get(cfg.recipe)
    except UnknownRecipe as error:
        fail(PROGRAM, f"--recipe {cfg.recipe}: {error}")
    if cfg.preset not in recipe.presets:
        fail(PROGRAM, f"--preset {cfg.preset}: {cfg.recipe} has {', '.join(recipe.presets)}")
    changes: dict[str, Any] = {"data": data, "run": {"progress_bar": False}}
    if cfg.batch_size is not None:
        changes["optim"] = {"batch_size": cfg.batch_size}
    if cfg.width is not None:
        changes["model"] = {"width": cfg.width}
    return build(recipe, recipe.preset(cfg.preset, **changes))


def profile(cfg: ProfileConfig, parts: Parts) -> dict:
    loader = parts.loader
    timer, clock = Timer(parts.device), StageClock(parts.device)
    steps = len(loader)
    order = epoch_permutation(len(loader.train), loader.seed, 0)
    batch_size = loader.batch_size
    names = ("read/decode", "views") + (() if cfg.data_only else STAGES)
    stages: dict[str, list[float]] = {name: [] for name in names}
    meter = Meter()
    for step in range(cfg.steps + 1):
        chosen = order[(step % steps) * batch_size : (step % steps + 1) * batch_size]
        progress = Progress(0, step % steps, steps, parts.cfg.optim.epochs)
        times = {}
        times["read/decode"], images = timer(loader.train.fetch, chosen)
        times["views"], (views, meta) = timer(loader.recipe, images, loader.train.sizes[chosen], loader.generator)
        if not cfg.data_only:
            index = chosen.to(parts.device)
            batch = ViewBatch(views, loader.train.indices[index], loader.train.labels[index], meta)
            train_step(parts, batch, progress, meter, stage=clock)
            times.update(clock.read())
        if step:  # the first step warms up
            for name, value in times.items():
                stages[name].append(value)
    stages_ms = {name: statistics.median(values) for name, values in stages.items()}
    if cfg.data_only:
        return {"stages_ms": stages_ms, "whole_step_ms": None, "batch_size": batch_size}
    batches = endless(loader)
    whole = []
    for step in range(cfg.steps + 1):
        batch = next(batches)
        progress = Progress(loader.epoch, loader.step - 1, steps, parts.cfg.optim.epochs)
        elapsed, _ = timer(train_step, parts, batch, progress, meter)
        if step:
            whole.append(elapsed)
    # The loop's step draws its batch from the loader before the clock starts, so add it.
    whole_ms = statistics.median(whole) + stages_ms["read/decode"] + stages_ms["views"]
    if cfg.trace is not None:
        with torch.profiler.profile() as prof:
            for _ in range(2):
                train_step(parts, next(batches), Progress(0, 0, steps, 1), meter)
        prof.export_chrome_trace(str(cfg.trace))
    return {"stages_ms": stages_ms, "whole_step_ms": whole_ms, "batch_size": batch_size}


def endless(loader: Loader) -> Iterator[ViewBatch]:
    """The loader's batches, epoch after epoch (a profile may outlast a small data set)."""
    while True:
        yield from loader
        loader.set_epoch(loader.epoch + 1)


def pil_dataloader(parts: Parts, workers: int, pin_memory: bool = False) -> torch.utils.data.DataLoader | None:
    """The usual baseline: a torchvision ``DataLoader`` whose ``workers`` processes decode the
    run's training images with PIL and make the same two views image by image, yielding
    (first views, second views); None for formats other than jpeg and tensor."""
    split = parts.loader.train
    if parts.info.format == "jpeg":
        jpeg = cast("JpegSplit", split)  # the jpeg format's split
        packed, offsets = jpeg.bytes.numpy(), jpeg.offsets
        read = lambda i: packed[offsets[i] : offsets[i + 1]].tobytes()  # noqa: E731
    elif parts.info.format == "tensor":
        pixels = cast("TensorSplit", split).images.permute(0, 2, 3, 1).cpu().numpy()
        read = lambda i: pixels[i]  # noqa: E731
    else:
        return None
    dataset = PilTwoViews(read, len(split), parts.loader.recipe.first)
    return torch.utils.data.DataLoader(dataset, batch_size=parts.loader.batch_size, shuffle=True,
                                       num_workers=workers, drop_last=True, pin_memory=pin_memory,
                                       persistent_workers=workers > 0)


def baseline_images_per_s(cfg: ProfileConfig, parts: Parts) -> float | None:
    """Images/s of ``pil_dataloader``, or None for other formats."""
    loader = pil_dataloader(parts, cfg.workers)
    if loader is None:
        return None
    batches = iter(loader)
    next(batches)
    start = time.perf_counter()
    count = min(cfg.steps, len(loader) - 1)
    for _ in range(count):
        next(batches)
    rate = count * parts.loader.batch_size / (time.perf_counter() - start)
    del batches
    return rate


def report(cfg: ProfileConfig, data: Path, parts: Parts, result: dict) -> None:
    n, whole = result["batch_size"], result["whole_step_ms"] or sum(result["stages_ms"].values())
    print(f"\n{cfg.recipe} on {data} ({parts.info.format} backend), batch {n}, median of {cfg.steps} steps\n")
    print("| stage | ms/step | images/s | share of step |\n|---|---:|---:|---:|")
    for name, ms in result["stages_ms"].items():
        print(f"| {name} | {ms:.1f} | {1000 * n / ms:.0f} | {100 * ms / whole:.1f}% |")
    label = "data stage" if result["whole_step_ms"] is None else "whole step"
    print(f"| {label} | {whole:.1f} | {1000 * n / whole:.0f} | 100% |")
    print(f"\nbottleneck: {result['bottleneck']}")


def main(args: list[str] | None = None) -> None:
    cfg = parse(ProfileConfig, None, args, PROGRAM)
    records, baseline = [], None
    for data in cfg.data:
        try:
            parts = build_run(cfg, data)
        except (RunError, DatasetError, ValueError) as error:
            fail(PROGRAM, error)
        result = profile(cfg, parts)
        result["bottleneck"] = max(result["stages_ms"], key=result["stages_ms"].get)
        report(cfg, data, parts, result)
        if cfg.baseline and baseline is None:
            baseline = baseline_images_per_s(cfg, parts)
        records.append({"data": str(data), "format": parts.info.format, **result})
    device = parts.device
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"\ndata stage (read/decode + two views) per backend, {device_name}\n")
    print("| backend | data | read/decode img/s | views img/s | data stage img/s | whole step img/s |")
    print("|---|---|---:|---:|---:|---:|")
    for record in records:
        n, stages = record["batch_size"], record["stages_ms"]
        data_ms = stages["read/decode"] + stages["views"]
        times = (stages["read/decode"], stages["views"], data_ms, record["whole_step_ms"])
        rates = ["" if ms is None else f"{1000 * n / ms:.0f}" for ms in times]
        print(f"| {record['format']} | {record['data']} | " + " | ".join(rates) + " |")
    if baseline is not None:
        print(f"| torchvision DataLoader + PIL ({cfg.workers} workers) | {cfg.data[0]} | | | {baseline:.0f} | |")
    out = {"recipe": cfg.recipe, "device": device_name, "date": time.strftime("%Y-%m-%d"), "runs": records,
           "dataloader_pil_images_per_s": baseline}
    cfg.out.write_text(json.dumps(out, indent=1))
    print(f"\n{cfg.out} written" + (f"; trace {cfg.trace}" if cfg.trace else ""))


if __name__ == "__main__":
    main()
