"""Linear evaluation of a backbone: a run's student, an export, or outside weights.

    python tools/linear_probe.py runs/<name> [--protocol mini-ssl|lightly|fast] [--epochs 100] [--data DIR]
    python tools/linear_probe.py runs/<name>/export                # backbone.pt and its model card
    python tools/linear_probe.py resnet18.pth --arch resnet18 --data data/imagenette-128

Loads the backbone through ``fastssl.weights``: a run folder or its checkpoint (built from
the run's own configuration), an export (``backbone.pt`` or its folder, built as its model
card says) or a plain torchvision/timm state dict (built as ``--arch`` and the options
beside it say; ``--data`` required). Evaluates it on the data set it trained on (found at
its stored absolute path, else relative to the run or export folder), or on ``--data``, by
one of the protocols of ``fastssl.eval.linear``: ``mini-ssl`` (100 epochs of SGD on
augmented views, Mini-SSL's numbers), ``lightly`` (90 epochs of SGD with a cosine schedule,
lightly's numbers), both with the last and best epoch reported, top-1 and top-5; or ``fast``
(L-BFGS logistic regression on features extracted once). ``--epochs``, ``--batch-size`` and
``--lr`` default to the chosen protocol's values. The result goes into ``linear.json`` in
the run folder (beside an export's or a state dict's file), one entry per protocol (an
earlier entry of the other protocol is kept), written under a temporary name and renamed.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

# The repository root replaces this script's folder on the path: tools/profile.py would
# otherwise shadow the standard library's ``profile`` module (imported by torch).
sys.path[0] = str(Path(__file__).resolve().parents[1])

import torch  # noqa: E402
import tyro  # noqa: E402

from fastssl.cli import fail, parse  # noqa: E402
from fastssl.eval.linear import PROTOCOLS, LinearConfig, extract_splits, fast_probe, train_linear  # noqa: E402
from fastssl.export import read_json, write_text_atomic  # noqa: E402
from fastssl.run_folder import RunFolderError  # noqa: E402
from fastssl.weights import CheckpointError, OutsideWeights, load_backbone  # noqa: E402
from pipelines.dataset import DatasetError, read_info  # noqa: E402
from pipelines.verify import verify  # noqa: E402

PROGRAM = "linear_probe.py"
RESULTS_FILE = "linear.json"


@dataclass(frozen=True)
class ProbeConfig:
    weights: tyro.conf.Positional[Path]
    """A run folder or its checkpoint.pt; an export (its folder or backbone.pt); a plain state dict (with --arch)."""
    protocol: Literal["mini-ssl", "lightly", "fast"] = "mini-ssl"
    data: Path | None = None  # converted data set; default: the one it trained on (required for a plain state dict)
    data_verify: Literal["full", "quick", "off"] = "quick"  # check --data's files first, as training's --data-verify
    epochs: int | None = None  # training epochs; default: the protocol's (mini-ssl 100, lightly 90)
    batch_size: int | None = None  # images per step; default: the protocol's (256)
    lr: float | None = None  # SGD's peak lr; default: the protocol's (mini-ssl 30; lightly 0.1, × batch / 256)
    eval_batch_size: int = 1024  # images per forward when extracting features
    seed: int = 1339  # order and views of the mini-ssl and lightly training batches
    outside: Annotated[OutsideWeights, tyro.conf.OmitArgPrefixes] = OutsideWeights()  # a plain state dict's network


def protocol_config(cfg: ProbeConfig) -> LinearConfig:
    """The protocol's LinearConfig with the options given on the command line in place of its own."""
    given: dict[str, Any] = {"epochs": cfg.epochs, "batch_size": cfg.batch_size, "lr": cfg.lr}
    return dataclasses.replace(PROTOCOLS[cfg.protocol], eval_batch_size=cfg.eval_batch_size, seed=cfg.seed,
                               **{name: value for name, value in given.items() if value is not None})


def evaluate(cfg: ProbeConfig) -> tuple[dict[str, Any], Path]:
    """The protocol's result for the weights, and the folder it belongs in."""
    if any(value is not None and value < 1 for value in (cfg.epochs, cfg.batch_size, cfg.eval_batch_size)):
        fail(PROGRAM, "--epochs, --batch-size and --eval-batch-size must be at least 1")
    try:
        trained = load_backbone(cfg.weights, cfg.outside, cfg.data)
        data = cfg.data or trained.data_set()
        # a data set that is missing, not converted or changed since conversion fails before any work
        verify(read_info(data), cfg.data_verify)
    except (CheckpointError, RunFolderError, DatasetError, ImportError) as error:
        fail(PROGRAM, str(error))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    network = trained.network
    try:
        if cfg.protocol == "fast":
            start = time.perf_counter()
            f = extract_splits(network, data, trained.views, device, cfg.eval_batch_size)
            extracted = time.perf_counter() - start
            result = fast_probe(f.train, f.train_labels, f.test, f.test_labels, f.info.num_classes)
            result["extract_seconds"] = round(extracted, 1)
        else:
            linear = protocol_config(cfg)
            report_every = max(1, linear.epochs // 10)

            def progress(record: dict[str, Any]) -> None:
                if record["epoch"] % report_every == 0 or record["epoch"] == linear.epochs:
                    print(f"  epoch {record['epoch']}/{linear.epochs} lr {record['lr']:g} train loss "
                          f"{record['train_loss']:.3f} acc {record['train_acc']:.2f} test {record['test_acc']:.2f}"
                          f"{top5_text(record['test_top5'])}")

            result = train_linear(network, data, trained.views, linear, device, progress)
    except (DatasetError, ValueError) as error:
        fail(PROGRAM, str(error))
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    result.update(weights=str(trained.source), kind=trained.kind, epochs_trained=trained.epochs_done, data=str(data),
                  device=device_name, date=datetime.date.today().isoformat())
    return result, trained.folder


PROTOCOL_TITLES = {"mini-ssl": "Mini-SSL", "lightly": "lightly"}


def top5_text(top5: float | None) -> str:
    """`` top-5 X`` beside a top-1 figure; nothing with five classes or fewer."""
    return "" if top5 is None else f" top-5 {top5:.2f}"


def summary_line(result: dict[str, Any]) -> str:
    if result["protocol"] == "fast":
        return (f"fast linear probe on {result['data']}: test {result['test_acc']:.2f} %"
                f"{top5_text(result['test_top5'])} ({result['test_images']} images, weight decay "
                f"{result['weight_decay']:g}, {result['extract_seconds'] + result['seconds']:.0f} s)")
    return (f"{PROTOCOL_TITLES[result['protocol']]} linear protocol on {result['data']}: last {result['last']:.2f} %"
            f"{top5_text(result['last_top5'])} (epoch {result['config']['epochs']}), best {result['best']:.2f} % "
            f"(epoch {result['best_epoch']}){top5_text(result['best_top5'])} on {result['test_images']} test images, "
            f"{result['seconds'] / 60:.1f} min")


def main(args: list[str] | None = None) -> dict[str, Any]:
    cfg = parse(ProbeConfig, None, args, PROGRAM)
    result, folder = evaluate(cfg)
    results = read_json(folder / RESULTS_FILE) or {}
    results[result["protocol"]] = result
    write_text_atomic(folder / RESULTS_FILE, json.dumps(results, indent=1))
    print(summary_line(result))
    print(f"  written: {folder / RESULTS_FILE}")
    return result


if __name__ == "__main__":
    main()
