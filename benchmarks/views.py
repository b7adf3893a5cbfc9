"""View pairs per second: fastssl's batched ops vs kornia.augmentation vs a DataLoader.

    python benchmarks/views.py [--data data/cifar10] [--out benchmarks/views.json]

In one run on one machine, makes two views of batches of CIFAR-10 32×32 images with the
MoCo v2 / SimCLR CIFAR recipe (RandomResizedCrop(32, scale=(0.2, 1)), horizontal flip,
ColorJitter(0.4, 0.4, 0.4, 0.1) with p=0.8, grayscale with p=0.2, Gaussian blur 13×13,
σ ∈ [0.1, 2] with p=0.5, normalisation), with and without the blur, by:

* fastssl: ``pipelines.views.two_views`` on a uint8 batch (float, normalised,
  channels-last output);
* kornia: ``kornia.augmentation`` with the same per-sample parameters, on the 2·N
  images of the batch converted to float (one call, the kornia-friendly way);
* torchvision: a ``DataLoader`` with PIL transforms in worker processes, each item
  two views of one image, collated into batches.

Each pipeline is warmed up first; the reported figure is the median of several timed
repeats. The torch pipelines use ``--threads`` intra-op threads, the DataLoader
``--workers`` processes of one thread each. Prints a Markdown table, writes JSON.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fastssl.cli import fail, parse  # noqa: E402
from pipelines.dataset import DatasetError, read_info  # noqa: E402
from pipelines.formats.tensor import read_split  # noqa: E402
from pipelines.reference import PilTwoViews  # noqa: E402
from pipelines.spec import ViewConfig  # noqa: E402
from pipelines.views import two_views  # noqa: E402

PROGRAM = "views.py"


@dataclass(frozen=True)
class BenchConfig:
    data: Path = Path("data/cifar10")  # converted data set (tools/convert.py) of 32×32 images
    out: Path = Path("benchmarks/views.json")  # JSON results
    batch: int = 256  # images per batch (view pairs per step)
    repeats: int = 7  # timed repeats per pipeline; the median is reported
    steps: int = 6  # batches per timed repeat
    warmup: int = 3  # untimed batches first
    threads: int = os.cpu_count() or 1  # intra-op threads of the torch pipelines
    workers: int = 2  # DataLoader worker processes
    pool: int = 8192  # training images the batches are drawn from
    device: str = "cpu"  # device of the fastssl and kornia pipelines (DataLoader: CPU)
    skip_dataloader: bool = False  # leave out the torchvision DataLoader


VIEWS = ViewConfig()  # the recipe all three pipelines follow


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --- the three pipelines ---------------------------------------------------------------


def fastssl_step(images: torch.Tensor, blur: bool) -> Callable[[torch.Tensor], object]:
    recipe = two_views(ViewConfig(blur_p=VIEWS.blur_p if blur else 0.0))
    generator = torch.Generator().manual_seed(0)
    sizes = torch.tensor([list(images.shape[-2:])]).expand(images.shape[0], 2)

    def step(index: torch.Tensor) -> object:
        batch = images[index]
        return recipe(batch, sizes[: len(index)], generator)

    return step


def kornia_step(images: torch.Tensor, blur: bool) -> Callable[[torch.Tensor], object]:
    import kornia.augmentation as K

    c = VIEWS
    ops = [
        K.RandomResizedCrop((c.size, c.size), scale=c.crop_scale, ratio=c.crop_ratio),
        K.RandomHorizontalFlip(p=c.flip_p),
        K.ColorJitter(*c.jitter, p=c.jitter_p),
        K.RandomGrayscale(p=c.grayscale_p),
    ]
    if blur:
        kernel = (c.blur_kernel, c.blur_kernel)
        ops.append(K.RandomGaussianBlur(kernel, c.blur_sigma, p=c.blur_p))
    ops.append(K.Normalize(mean=torch.tensor(c.mean), std=torch.tensor(c.std)))
    augment = K.AugmentationSequential(*ops).to(images.device)

    def step(index: torch.Tensor) -> object:
        batch = images[index].float().div_(255)
        return augment(torch.cat([batch, batch]))  # both views in one call

    return step


# --- timing ------------------------------------------------------------------------------


def time_interleaved(
    steps: dict[str, Callable[[torch.Tensor], object]], cfg: BenchConfig, pool: int, device: torch.device
) -> dict[str, list[float]]:
    """Pairs/s of each repeat of each pipeline, the repeats taken in turns (so that a
    change in machine load hits every pipeline alike)."""
    generator = torch.Generator().manual_seed(1)

    def batch_index() -> torch.Tensor:
        return torch.randint(0, pool, (cfg.batch,), generator=generator).to(device)

    for step in steps.values():
        for _ in range(cfg.warmup):
            step(batch_index())
    synchronize(device)
    rates: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(cfg.repeats):
        for name, step in steps.items():
            indices = [batch_index() for _ in range(cfg.steps)]
            synchronize(device)
            start = time.perf_counter()
            for index in indices:
                step(index)
            synchronize(device)
            rates[name].append(cfg.steps * cfg.batch / (time.perf_counter() - start))
    return rates


def time_dataloader(images: np.ndarray, blur: bool, cfg: BenchConfig) -> list[float]:
    loader = torch.utils.data.DataLoader(
        PilTwoViews(lambda i: np.asarray(images[i]), len(images), VIEWS, blur),
        batch_size=cfg.batch,
        shuffle=True,
        num_workers=cfg.workers,
        drop_last=True,
        persistent_workers=cfg.workers > 0,
        generator=torch.Generator().manual_seed(2),
    )
    needed = cfg.warmup + cfg.repeats * cfg.steps
    if len(loader) < needed:
        raise ValueError(f"{len(images)} images give {len(loader)} batches; the DataLoader needs {needed}")
    batches = iter(loader)
    for _ in range(cfg.warmup):
        next(batches)
    rates = []
    for _ in range(cfg.repeats):
        start = time.perf_counter()
        for _ in range(cfg.steps):
            next(batches)
        rates.append(cfg.steps * cfg.batch / (time.perf_counter() - start))
    del batches  # stops the workers before anything else is timed
    return rates


# --- report ------------------------------------------------------------------------------


def table(results: list[dict]) -> str:
    kornia = {r["blur"]: r["pairs_per_s"] for r in results if r["pipeline"] == "kornia"}
    lines = [
        "| pipeline | blur | view pairs/s (median) | range over repeats | vs kornia |",
        "|---|---|---:|---:|---:|",
    ]
    for r in results:
        ratio = r["pairs_per_s"] / kornia[r["blur"]] if r["blur"] in kornia else float("nan")
        lines.append(
            f"| {r['pipeline']} | {'yes' if r['blur'] else 'no'} | {r['pairs_per_s']:,.0f} "
            f"| {min(r['repeats']):,.0f}–{max(r['repeats']):,.0f} | {ratio:.2f}× |"
        )
    return "\n".join(lines)


def run(cfg: BenchConfig) -> dict:
    try:
        info = read_info(cfg.data)
        array, _, _ = read_split(info, info.train_split)
    except DatasetError as error:
        fail(PROGRAM, error)
    if array.shape[1:] != (32, 32, 3):
        fail(PROGRAM, f"{cfg.data}: images are {array.shape[1:]}, this benchmark wants 32×32×3")
    if cfg.batch < 1 or cfg.repeats < 1 or cfg.steps < 1:
        fail(PROGRAM, "--batch, --repeats and --steps must be positive")
    try:
        device = torch.device(cfg.device)
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError) as error:
        fail(PROGRAM, f"--device {cfg.device}: {error}")
    torch.set_num_threads(cfg.threads)
    pool = min(cfg.pool, len(array))
    pixels = torch.from_numpy(np.array(array[:pool])).to(device)
    images = pixels.permute(0, 3, 1, 2)  # N×3×H×W in channels-last memory, as the loader has it

    results: list[dict[str, Any]] = []
    for blur in (False, True):
        steps = {"fastssl": fastssl_step(images, blur), "kornia": kornia_step(images, blur)}
        rates = time_interleaved(steps, cfg, pool, device)
        if not cfg.skip_dataloader:
            rates["torchvision DataLoader"] = time_dataloader(array, blur, cfg)
        for name, repeats in rates.items():
            results.append(
                {"pipeline": name, "blur": blur, "pairs_per_s": statistics.median(repeats), "repeats": repeats}
            )
    order = {"fastssl": 0, "kornia": 1, "torchvision DataLoader": 2}
    results.sort(key=lambda r: (r["blur"], order[r["pipeline"]]))

    import kornia
    import torchvision

    return {
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()},
        "machine": {
            "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
            "cpu": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "kornia": kornia.__version__,
        },
        "results": results,
    }


def main(args: list[str] | None = None) -> None:
    cfg = parse(BenchConfig, BenchConfig(), args, PROGRAM)
    start = time.perf_counter()
    report = run(cfg)
    report["seconds"] = round(time.perf_counter() - start, 1)
    machine = report["machine"]
    print(
        f"view pairs/s, batch {cfg.batch}, CIFAR-10 32×32, {machine['device']}, "
        f"{cfg.threads} threads / {cfg.workers} DataLoader workers, "
        f"median of {cfg.repeats}×{cfg.steps} batches, torch {machine['torch']}, kornia {machine['kornia']}\n"
    )
    print(table(report["results"]))
    try:
        cfg.out.parent.mkdir(parents=True, exist_ok=True)
        cfg.out.write_text(json.dumps(report, indent=1) + "\n")
    except OSError as error:
        fail(PROGRAM, f"{cfg.out}: cannot write ({error})")
    print(f"\n{cfg.out} written in {report['seconds']} s")


if __name__ == "__main__":
    main()
