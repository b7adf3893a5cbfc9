"""Linear evaluation of a run's student backbone.

    python tools/linear_probe.py runs/<name>/checkpoint.pt [--protocol mini-ssl|fast] [--epochs 100] [--data DIR]

Rebuilds the backbone from the checkpoint's own configuration and evaluates it on the data
set it trained on (or ``--data``) by one of the protocols of ``fastssl.eval.linear``:
``mini-ssl`` (100 epochs of SGD on augmented views, Mini-SSL's numbers; last and best
epoch reported) or ``fast`` (L-BFGS logistic regression on features extracted once). The
result goes into ``linear.json`` beside the checkpoint, one entry per protocol (an earlier
entry of the other protocol is kept), written under a temporary name and renamed.
"""

from __future__ import annotations

import datetime
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

# The repository root replaces this script's folder on the path: tools/profile.py would
# otherwise shadow the standard library's ``profile`` module (imported by torch).
sys.path[0] = str(Path(__file__).resolve().parents[1])

import torch  # noqa: E402
import tyro  # noqa: E402

from fastssl.cli import fail, parse  # noqa: E402
from fastssl.eval.linear import LinearConfig, extract_splits, fast_probe, mini_ssl_linear  # noqa: E402
from fastssl.export import CheckpointError, load_backbone, read_json, write_text_atomic  # noqa: E402
from pipelines.dataset import DatasetError, read_info  # noqa: E402

PROGRAM = "linear_probe.py"
RESULTS_FILE = "linear.json"


@dataclass(frozen=True)
class ProbeConfig:
    checkpoint: tyro.conf.Positional[Path]  # runs/<name>/checkpoint.pt
    protocol: Literal["mini-ssl", "fast"] = "mini-ssl"
    data: Path | None = None  # converted data set; default: the one the run trained on
    epochs: int = 100  # mini-ssl: training epochs (the lr drops at 60 % and 80 % of them)
    batch_size: int = 256  # mini-ssl: images per step
    lr: float = 30.0  # mini-ssl: SGD lr (Nesterov momentum 0.9, no weight decay)
    eval_batch_size: int = 1024  # images per forward when extracting features
    seed: int = 1339  # order and views of the mini-ssl training batches


def evaluate(cfg: ProbeConfig) -> tuple[dict[str, Any], Path]:
    """The protocol's result for the checkpoint, and the run folder it belongs to."""
    if cfg.epochs < 1 or cfg.batch_size < 1 or cfg.eval_batch_size < 1:
        fail(PROGRAM, "--epochs, --batch-size and --eval-batch-size must be at least 1")
    try:
        trained = load_backbone(cfg.checkpoint)
        data = cfg.data or Path(trained.config["data"])
        read_info(data)  # a data set that is missing or not converted fails before any work
    except (CheckpointError, DatasetError, ImportError) as error:
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
            linear = LinearConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr,
                                  eval_batch_size=cfg.eval_batch_size, seed=cfg.seed)
            report_every = max(1, cfg.epochs // 10)

            def progress(record: dict[str, Any]) -> None:
                if record["epoch"] % report_every == 0 or record["epoch"] == cfg.epochs:
                    print(f"  epoch {record['epoch']}/{cfg.epochs} lr {record['lr']:g} train loss "
                          f"{record['train_loss']:.3f} acc {record['train_acc']:.2f} test {record['test_acc']:.2f}")

            result = mini_ssl_linear(network, data, trained.views, linear, device, progress)
    except (DatasetError, ValueError) as error:
        fail(PROGRAM, str(error))
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    result.update(checkpoint=str(cfg.checkpoint), epochs_trained=trained.epochs_done, data=str(data),
                  device=device_name, date=datetime.date.today().isoformat())
    return result, trained.run_dir


def summary_line(result: dict[str, Any]) -> str:
    if result["protocol"] == "fast":
        return (f"fast linear probe on {result['data']}: test {result['test_acc']:.2f} % "
                f"({result['test_images']} images, weight decay {result['weight_decay']:g}, "
                f"{result['extract_seconds'] + result['seconds']:.0f} s)")
    return (f"Mini-SSL linear protocol on {result['data']}: last {result['last']:.2f} % "
            f"(epoch {result['config']['epochs']}), best {result['best']:.2f} % (epoch {result['best_epoch']}) "
            f"on {result['test_images']} test images, {result['seconds'] / 60:.1f} min")


def main(args: list[str] | None = None) -> dict[str, Any]:
    cfg = parse(ProbeConfig, None, args, PROGRAM)
    result, run_dir = evaluate(cfg)
    results = read_json(run_dir / RESULTS_FILE) or {}
    results[result["protocol"]] = result
    write_text_atomic(run_dir / RESULTS_FILE, json.dumps(results, indent=1))
    print(summary_line(result))
    print(f"  written: {run_dir / RESULTS_FILE}")
    return result


if __name__ == "__main__":
    main()
