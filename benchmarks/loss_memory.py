"""Peak memory and time of the InfoNCE loss (forward + backward) per log-sum-exp backend.

    python benchmarks/loss_memory.py [--batch 4096 --queue 65536 --dim 128 --device cpu]

MoCo's queue loss at a large batch and queue: ``plain`` materialises the N×(K+1) logits
(and autograd keeps them for the backward pass), ``chunked`` keeps N×chunk at a time,
``fused`` (CUDA only) keeps tiles in registers. Each backend runs in a fresh process so
peak memory is its own: peak RSS above the inputs on the CPU, ``max_memory_allocated``
above the inputs on CUDA. Writes ``benchmarks/loss_memory.json`` and prints a table.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[0] = str(ROOT)

import torch  # noqa: E402
import tyro  # noqa: E402


@dataclass(frozen=True)
class Options:
    batch: int = 4096  # queries
    queue: int = 65536  # negatives
    dim: int = 128
    device: str = "cpu"
    backends: tuple[str, ...] = ("plain", "chunked", "fused")
    out: Path = ROOT / "benchmarks" / "loss_memory.json"
    child: str = ""  # internal: measure this backend in this process


def measure(opts: Options) -> dict:
    from fastssl.losses.infonce import queue_info_nce

    device = torch.device(opts.device)
    generator = torch.Generator().manual_seed(0)
    q, k = (torch.randn(opts.batch, opts.dim, generator=generator).to(device) for _ in range(2))
    queue = torch.randn(opts.queue, opts.dim, generator=generator).to(device)
    q.requires_grad_()
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    start = time.perf_counter()
    loss = queue_info_nce(q, k, queue, 0.2, backend=opts.child)  # type: ignore[arg-type]
    loss.backward()
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"backend": opts.child, "seconds": seconds, "peak_mib": (peak - base) / 2**20, "loss": loss.item()}


def main() -> None:
    opts = tyro.cli(Options)
    if opts.child:
        print(json.dumps(measure(opts)))
        return
    results = []
    for backend in opts.backends:
        if backend == "fused" and opts.device == "cpu":
            continue  # the Triton kernels need a GPU (the interpreter is for correctness tests)
        command = [sys.executable, __file__, "--batch", str(opts.batch), "--queue", str(opts.queue),
                   "--dim", str(opts.dim), "--device", opts.device, "--child", backend]
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    plain = next((r for r in results if r["backend"] == "plain"), results[0])
    print(f"\nInfoNCE forward+backward, batch {opts.batch}, queue {opts.queue}, dim {opts.dim}, {opts.device}\n")
    print("| backend | seconds | peak MiB above inputs | memory vs plain | time vs plain | loss |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['backend']} | {r['seconds']:.2f} | {r['peak_mib']:.0f} | {r['peak_mib'] / plain['peak_mib']:.3f}× "
              f"| {r['seconds'] / plain['seconds']:.2f}× | {r['loss']:.5f} |")
    record = {"options": {k: v for k, v in vars(opts).items() if k not in ("out", "child")}, "results": results,
              "date": time.strftime("%Y-%m-%d"),
              "device": torch.cuda.get_device_name() if opts.device == "cuda" else "cpu"}
    opts.out.write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
