"""Images/s of full training steps against a bare forward+backward, in one run.

    python benchmarks/train_step.py --data data/cifar10 [--batch-size 256] [--steps 4] [--width 64]

For each recipe (MoCo v2, SimCLR) it times whole steps of the real trainer (views made on
the device, method forward, backward, optimiser, EMA and queue updates) after one
warm-up step, and beside them the bare backbone forward+backward on the same number of
views with plain SGD. Images/s counts source images (each step makes two views of each).
Prints a Markdown table and writes JSON.
"""

from __future__ import annotations

import dataclasses
import json
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fastssl.cli import parse  # noqa: E402
from fastssl.methods.base import Progress  # noqa: E402
from fastssl.models.resnet import build_backbone  # noqa: E402
from fastssl.recipes import get  # noqa: E402
from fastssl.train.build import build  # noqa: E402
from fastssl.train.step import Meter, train_step  # noqa: E402


@dataclass(frozen=True)
class Options:
    data: Path = Path("data/cifar10")
    batch_size: int = 256
    steps: int = 4  # timed steps per measurement, after one warm-up step
    width: int = 64  # ResNet-18 first-stage channels
    out: Path = Path("benchmarks/train_step.json")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(step, steps: int, device: torch.device) -> list[float]:
    step()
    synchronize(device)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def recipe_step(name: str, opts: Options):
    recipe = get(name)
    cfg = recipe.preset("cifar10", data=opts.data, optim={"batch_size": opts.batch_size},
                        model={"width": opts.width}, run={"progress_bar": False})
    parts = build(recipe, cfg)
    batches, meter = iter(parts.loader), Meter()

    def step() -> None:
        progress = Progress(0, parts.loader.step, len(parts.loader), cfg.optim.epochs)
        train_step(parts, next(batches), progress, meter)

    return step, parts.device


def bare_step(opts: Options, device: torch.device):
    backbone = build_backbone("resnet18", True, False, opts.width, "bn", 1)
    backbone = backbone.to(device).to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(backbone.parameters(), lr=0.01, momentum=0.9)
    views = torch.randn(2 * opts.batch_size, 3, 32, 32, device=device).contiguous(memory_format=torch.channels_last)
    autocast = torch.autocast("cuda", torch.bfloat16, enabled=device.type == "cuda")

    def step() -> None:
        with autocast:
            loss = backbone(views).float().square().mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def main() -> None:
    opts = parse(Options, None, None, "train_step.py")
    rows = {}
    for name in ("mocov2", "simclr"):
        step, device = recipe_step(name, opts)
        rows[name] = time_steps(step, opts.steps, device)
    rows["bare forward+backward (2 views, BN, SGD)"] = time_steps(bare_step(opts, device), opts.steps, device)
    bare = statistics.median(rows["bare forward+backward (2 views, BN, SGD)"])
    if device.type == "cuda":
        device_name = torch.cuda.get_device_name(device)
    else:
        device_name = f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)"
    print(f"\n{device_name}, ResNet-18 width {opts.width}, batch {opts.batch_size}, torch {torch.__version__}\n")
    print("| step | ms/step (median) | images/s | × bare fwd+bwd |\n|---|---|---|---|")
    results = {}
    for name, times in rows.items():
        median = statistics.median(times)
        results[name] = {"ms_per_step": 1000 * median, "images_per_s": opts.batch_size / median,
                         "vs_bare": median / bare}
        print(f"| {name} | {1000 * median:.0f} | {opts.batch_size / median:.1f} | {median / bare:.2f} |")
    options = {k: str(v) for k, v in dataclasses.asdict(opts).items()}
    record = {"device": device_name, "options": options, "date": time.strftime("%Y-%m-%d"), "results": results}
    opts.out.write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
