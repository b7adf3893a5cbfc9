"""The GPU benchmark: seconds per epoch of SimCLR, MoCo v2 and BYOL against a plain baseline
and against the bare forward+backward, all in one run (``benchmarks/gpu.sh`` calls it).

    python benchmarks/gpu.py --data .gpu/cifar10 [--methods simclr mocov2 byol] [--batch-size 512]

For each method:

* fastssl — the recipe as it trains: views made on the device from resident uint8 pixels,
  bf16 autocast, channels-last, compiled networks captured as CUDA graphs, fused
  optimiser; one full epoch timed after warm-up steps (compilation), host clock around a
  synchronised epoch.
* per-stage breakdown — ``tools/profile.py``'s stages (read/decode, views, forward+loss,
  backward, optimiser) with CUDA events, on an uncompiled copy so the stages are separable.
* plain baseline — the same method and batch, fp32, NCHW, eager, SGD without fusion, fed by
  a torchvision ``DataLoader`` (PIL decode, per-image transforms, ``--workers`` processes):
  ``--baseline-steps`` steps timed, extrapolated to an epoch.
* bare forward+backward — the backbone alone on the same 2×batch views (same precision,
  memory format and compilation), the arithmetic floor the step is compared with.
* host synchronisations — a few more steps under ``torch.cuda.set_sync_debug_mode("warn")``,
  its warnings counted (the target is none), and the warm-up's seconds (compilation and
  graph capture: what a user waits before the first timed step).

Methods run in the order given while ``--budget-minutes`` lasts (a method that would start
after it is listed as skipped); the Markdown and JSON are rewritten after each method, so
a run cut short keeps what it measured.

Model FLOPs per step are counted by ``torch.utils.flop_counter.FlopCounterMode`` on one
eager step (matrix products and convolutions, 2 FLOP per multiply-add, backward
included); MFU = FLOPs per step / (seconds per step × peak dense bf16 FLOP/s of the
device, ``PEAK_BF16``). Writes ``benchmarks/gpu.md`` and ``benchmarks/gpu.json``.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import statistics
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

ROOT = Path(__file__).resolve().parents[1]
sys.path[0] = str(ROOT)

import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from benchmarks.train_step import synchronize, time_steps  # noqa: E402
from fastssl.cli import parse  # noqa: E402
from fastssl.methods.base import Progress  # noqa: E402
from fastssl.recipes import get  # noqa: E402
from fastssl.train.build import Parts, build  # noqa: E402
from fastssl.train.loop import evaluate  # noqa: E402
from fastssl.train.step import Meter, train_step  # noqa: E402
from pipelines.batch import ViewBatch  # noqa: E402
from tools.profile import ProfileConfig, pil_dataloader, profile  # noqa: E402

# Dense bf16 tensor-core peaks (NVIDIA data sheets, without sparsity), FLOP/s.
PEAK_BF16 = {"H100 SXM": 989.4e12, "H100 PCIe": 756.5e12, "H100 NVL": 835.5e12, "H200": 989.4e12, "A100": 312e12}


@dataclass(frozen=True)
class Options:
    data: Path = ROOT / ".gpu" / "cifar10"  # a tensor-format CIFAR-10 (tools/convert.py)
    methods: tuple[str, ...] = ("simclr", "mocov2", "byol")
    batch_size: int = 512
    warmup_steps: int = 20  # before the timed epoch: compilation and CUDA-graph capture
    baseline_steps: int = 20  # plain-baseline steps timed (after 3 warm-up steps)
    bare_steps: int = 20
    workers: int = 8  # the baseline DataLoader's processes
    width: int | None = None  # ResNet-18 first-stage channels (default: the recipe's; CPU smoke tests: 8)
    sync_check_steps: int = 3  # steps run under the sync debug mode after the timed epoch
    budget_minutes: float = 7.0  # no method starts after this much time
    out: Path = ROOT / "benchmarks" / "gpu"  # writes <out>.md and <out>.json


def peak_flops(device: torch.device) -> tuple[float | None, str]:
    if device.type != "cuda":
        return None, "cpu"
    name = torch.cuda.get_device_name(device)
    for key, peak in PEAK_BF16.items():
        if all(word in name for word in key.split()):
            return peak, name
    return None, name


def configure(name: str, opts: Options, fast: bool) -> Parts:
    """The run of recipe ``name`` as it trains (``fast``) or as the plain baseline: fp32,
    NCHW, eager, no fused optimiser."""
    recipe = get(name)
    switches = {} if fast else {"precision": "fp32", "channels_last": False, "compile": False,
                                "cuda_graphs": False, "fused_optimizer": False}
    model = {} if opts.width is None else {"width": opts.width}
    cfg = recipe.preset("cifar10", data=opts.data, model=model, optim={"batch_size": opts.batch_size},
                        run={"progress_bar": False, "knn_before_training": False, **switches})
    return build(recipe, cfg)


def epoch_seconds(parts: Parts, warmup: int) -> tuple[float, float]:
    """Seconds of ``warmup`` steps of one epoch (compilation, graph capture), then of one
    full epoch of loader + steps."""
    meter, loader = Meter(), parts.loader
    steps = len(loader)
    loader.set_epoch(0)
    start = time.perf_counter()
    for step, batch in zip(range(warmup), loader, strict=False):
        train_step(parts, batch, Progress(0, step, steps, 2), meter)
    synchronize(parts.device)
    warmup_seconds = time.perf_counter() - start
    loader.set_epoch(1)
    start = time.perf_counter()
    for step, batch in enumerate(loader):
        train_step(parts, batch, Progress(1, step, steps, 2), meter)
    synchronize(parts.device)
    meter.read()
    return warmup_seconds, time.perf_counter() - start


def host_syncs_per_step(parts: Parts, steps: int) -> float | None:
    """Synchronising CUDA calls per step (loader included) that the sync debug mode reports;
    None off CUDA."""
    if parts.device.type != "cuda" or steps == 0:
        return None
    parts.loader.set_epoch(2)
    meter, batches = Meter(), iter(parts.loader)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            for step in range(steps):
                train_step(parts, next(batches), Progress(2, step, len(parts.loader), 3), meter)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught) / steps


def flops_per_step(parts: Parts) -> float:
    batch = next(iter(parts.loader))
    with FlopCounterMode(display=False) as counter:
        train_step(parts, batch, Progress(0, 0, len(parts.loader), 1), Meter())
    return float(counter.get_total_flops())


def baseline_batches(parts: Parts, workers: int):
    """ViewBatches from the PIL ``DataLoader`` baseline (NCHW, fp32)."""
    loader = pil_dataloader(parts, workers, pin_memory=True)
    assert loader is not None, "the benchmark's data sets are in the tensor format"
    while True:
        for first, second in loader:
            views = torch.cat([first, second]).to(parts.device, non_blocking=True)
            n = first.shape[0]
            yield ViewBatch({"global": views}, torch.arange(n, device=parts.device),
                            torch.zeros(n, dtype=torch.long, device=parts.device), {})


def measure(name: str, opts: Options) -> dict[str, Any]:
    parts = configure(name, opts, fast=True)
    steps = len(parts.loader)
    if parts.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(parts.device)
    warmup_seconds, seconds = epoch_seconds(parts, opts.warmup_steps)
    peak_memory = torch.cuda.max_memory_allocated(parts.device) / 2**20 if parts.device.type == "cuda" else None
    syncs = host_syncs_per_step(parts, opts.sync_check_steps)
    knn_start = time.perf_counter()
    evaluate(parts, epoch=1)
    knn_seconds = time.perf_counter() - knn_start

    plain = configure(name, opts, fast=False)
    flops = flops_per_step(plain)
    stages = profile(ProfileConfig(data=(opts.data,), recipe=name, steps=5), plain)["stages_ms"]
    batches, meter = baseline_batches(plain, opts.workers), Meter()
    baseline = time_steps(lambda: train_step(plain, next(batches), Progress(0, 0, steps, 1), meter),
                          opts.baseline_steps, plain.device)

    bare = time_steps(bare_step(parts), opts.bare_steps, parts.device)
    peak, _ = peak_flops(parts.device)
    per_step = seconds / steps
    return {
        "seconds_per_epoch": seconds, "images_per_s": steps * opts.batch_size / seconds,
        "ms_per_step": 1000 * per_step, "peak_memory_mib": peak_memory, "warmup_seconds": warmup_seconds,
        "host_syncs_per_step": syncs,
        "knn_seconds": knn_seconds, "knn_share_every_5_epochs": knn_seconds / (5 * seconds + knn_seconds),
        "plain_baseline_seconds_per_epoch": statistics.median(baseline) * steps,
        "bare_ms_per_step": 1000 * statistics.median(bare), "vs_bare": per_step / statistics.median(bare),
        # The views are made the same way in both trainers; their share is of the fast step.
        "stages_ms_uncompiled": stages, "view_share": stages["views"] / (1000 * per_step),
        "flops_per_step": flops, "mfu": None if peak is None else flops / (per_step * peak),
    }


def bare_step(parts: Parts):
    """Forward+backward of a copy of the parts's student backbone alone on 2×batch views,
    compiled (and graph-captured) as the parts's networks are."""
    backbone = copy.deepcopy(cast(nn.Module, parts.method.student.backbone))  # a ResNet or ViT
    if parts.compile_mode is not None:
        backbone.compile(mode=parts.compile_mode)
    size = parts.loader.recipe.first.size
    views = torch.randn(2 * parts.loader.batch_size // parts.accelerator.num_processes, 3, size, size,
                        device=parts.device).contiguous(memory_format=torch.channels_last)

    def step() -> None:
        if parts.graphed:
            torch.compiler.cudagraph_mark_step_begin()
        with parts.accelerator.autocast():
            loss = backbone(views).float().square().mean()
        loss.backward()
        backbone.zero_grad(set_to_none=True)

    return step


def report(results: dict[str, dict], opts: Options, device_name: str, peak: float | None) -> str:
    lines = [
        f"# GPU benchmark: {device_name}, CIFAR-10 ResNet-18, batch {opts.batch_size}, "
        f"torch {torch.__version__}, {time.strftime('%Y-%m-%d')}",
        "",
        f"`python benchmarks/gpu.py --data {opts.data} --batch-size {opts.batch_size}`; MFU: model FLOPs "
        f"(FlopCounterMode, 2 FLOP per multiply-add, backward included) over "
        f"{'%.1f TFLOP/s dense bf16' % (peak / 1e12) if peak else 'no known peak'}.",
        "",
        "| method | s/epoch | images/s | × bare fwd+bwd | plain baseline s/epoch | speed-up | MFU | "
        "peak MiB | views share | kNN share (every 5 epochs) | warm-up s | host syncs/step |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        if "skipped" in r:
            lines.append(f"| {name} | skipped: {r['skipped']} |" + " |" * 10)
            continue
        mfu = "" if r["mfu"] is None else f"{100 * r['mfu']:.1f}%"
        memory = "" if r["peak_memory_mib"] is None else f"{r['peak_memory_mib']:.0f}"
        syncs = "" if r["host_syncs_per_step"] is None else f"{r['host_syncs_per_step']:.1f}"
        lines.append(
            f"| {name} | {r['seconds_per_epoch']:.2f} | {r['images_per_s']:.0f} | {r['vs_bare']:.2f} | "
            f"{r['plain_baseline_seconds_per_epoch']:.1f} | "
            f"{r['plain_baseline_seconds_per_epoch'] / r['seconds_per_epoch']:.1f}× | {mfu} | {memory} | "
            f"{100 * r['view_share']:.1f}% | {100 * r['knn_share_every_5_epochs']:.1f}% | "
            f"{r['warmup_seconds']:.0f} | {syncs} |"
        )
    return "\n".join(lines) + "\n"


def write(results: dict[str, dict], opts: Options) -> None:
    """Rewrite ``<out>.md`` and ``<out>.json`` with what is measured so far."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    peak, device_name = peak_flops(device)
    markdown = report(results, opts, device_name, peak)
    opts.out.with_suffix(".md").write_text(markdown)
    record = {"device": device_name, "peak_flops": peak, "date": time.strftime("%Y-%m-%d"),
              "torch": torch.__version__, "options": {k: str(v) for k, v in dataclasses.asdict(opts).items()},
              "results": results}
    opts.out.with_suffix(".json").write_text(json.dumps(record, indent=1))
    print(markdown, flush=True)


def main(args: list[str] | None = None) -> None:
    opts = parse(Options, None, args, "gpu.py")
    results: dict[str, dict] = {}
    start = time.perf_counter()
    for name in opts.methods:
        minutes = (time.perf_counter() - start) / 60
        if minutes > opts.budget_minutes:
            results[name] = {"skipped": f"{minutes:.1f} of {opts.budget_minutes:g} budgeted minutes spent"}
        else:
            results[name] = measure(name, opts)
            print(name, json.dumps(results[name], indent=1), flush=True)
        write(results, opts)


if __name__ == "__main__":
    main()
