"""Split-BN, grouped against one BN call per group: ops dispatched, eager and compiled
time of a ResNet-18 forward+backward, and the compile time, in one run.

    python benchmarks/split_bn.py [--batch-size 256] [--width 64] [--steps 3] [--compile]

Mini-SSL's split-BN (8 groups per view) makes 16 groups per BN layer for two views. The
obvious implementation (the previous fastssl one, kept here as the baseline) calls torch's
batch norm once per group: two kernels per group and layer in an eager step, and a
compiled graph that grows with the group count. ``SplitBatchNorm2d`` normalises all
groups with a few whole-batch ops. Plain BN (one group per layer, the bare step's
normalisation) is the floor. The op count (aten ops dispatched per forward+backward) does
not depend on the device: it is the number of kernels an eager GPU step launches, give
or take metadata-only ops. Prints a Markdown table; writes JSON.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

# A fresh compile cache, so the compile times are compilations, not cache reads.
os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="split_bn_inductor_")

import torch  # noqa: E402
from torch import Tensor, nn  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.train_step import synchronize, time_steps  # noqa: E402
from fastssl.cli import parse  # noqa: E402
from fastssl.models.norm import SplitBatchNorm2d  # noqa: E402
from fastssl.models.resnet import ResNet  # noqa: E402


@dataclass(frozen=True)
class Options:
    batch_size: int = 256  # images per view; two views per step
    bn_splits: int = 8  # groups per view (Mini-SSL)
    width: int = 64  # ResNet-18 first-stage channels
    steps: int = 3  # timed steps, median, after one warm-up
    compile: bool = False  # also time torch.compile (minutes on a CPU)
    out: Path = Path("benchmarks/split_bn.json")


class PerGroupBatchNorm2d(SplitBatchNorm2d):
    """The baseline (fastssl's previous split-BN): torch's batch norm once per group, the
    outputs stacked, the running statistics from the groups' statistics."""

    def forward(self, x: Tensor) -> Tensor:
        if not self.training:
            return super().forward(x)
        groups = x.view(-1, self.group_size, *x.shape[1:]).unbind(0)
        outputs, means, invstds = zip(
            *(torch.native_batch_norm(g, self.weight, self.bias, None, None, True, 0.0, self.eps) for g in groups),
            strict=True,
        )
        shape = (len(groups), 1, 1, 1, x.shape[1])
        variances = torch.stack(invstds).detach().pow(-2).sub(self.eps).view(shape)
        self._update_running_stats(torch.stack(means).detach().view(shape), variances, groups[0][:, 0].numel())
        return torch.stack(outputs).flatten(0, 1)


class OpCounter(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[str(func)] += 1
        return func(*args, **(kwargs or {}))


def step_function(norm: type[nn.Module], opts: Options, device: torch.device):
    torch.manual_seed(0)
    group = opts.batch_size // opts.bn_splits
    layer = (lambda c: norm(c)) if norm is nn.BatchNorm2d else (lambda c: norm(c, group))
    net = ResNet("resnet18", width=opts.width, norm=layer).to(device).to(memory_format=torch.channels_last)
    views = torch.randn(2 * opts.batch_size, 3, 32, 32, device=device).contiguous(memory_format=torch.channels_last)

    def step() -> None:
        net(views).square().mean().backward()
        net.zero_grad(set_to_none=True)

    return net, step


def main() -> None:
    opts = parse(Options, None, None, "split_bn.py")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rows = {"per-group BN calls (baseline)": PerGroupBatchNorm2d, "grouped (SplitBatchNorm2d)": SplitBatchNorm2d,
            "plain BN, one group (floor)": nn.BatchNorm2d}
    results = {}
    for name, norm in rows.items():
        net, step = step_function(norm, opts, device)
        step()
        with OpCounter() as counter:
            step()
        eager = statistics.median(time_steps(step, opts.steps, device))
        row = {"ops_per_step": sum(counter.ops.values()), "eager_ms": 1000 * eager}
        if opts.compile:
            net.compile()
            start = time.perf_counter()
            step()  # compiles
            synchronize(device)
            row["compile_s"] = time.perf_counter() - start
            row["compiled_ms"] = 1000 * statistics.median(time_steps(step, opts.steps, device))
        results[name] = row
        print(name, json.dumps(row), flush=True)
    threads = f"cpu ({torch.get_num_threads()} threads)"
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else threads
    print(f"\n{device_name}, ResNet-18 width {opts.width}, 2×{opts.batch_size} views, "
          f"{opts.bn_splits} groups per view, torch {torch.__version__}\n")
    compiled = " compile + first step s | compiled ms |" if opts.compile else ""
    print("| split-BN | aten ops per fwd+bwd | eager ms |" + compiled)
    print("|---|---:|---:|" + ("---:|---:|" if opts.compile else ""))
    for name, row in results.items():
        line = f"| {name} | {row['ops_per_step']} | {row['eager_ms']:.0f} |"
        if opts.compile:
            line += f" {row['compile_s']:.0f} | {row['compiled_ms']:.0f} |"
        print(line)
    record = {"device": device_name, "date": time.strftime("%Y-%m-%d"), "torch": torch.__version__,
              "options": {k: str(v) for k, v in dataclasses.asdict(opts).items()}, "results": results}
    opts.out.write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
