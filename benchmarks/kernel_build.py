"""Build fastssl's Triton kernels for a Hopper GPU (sm_90) on any machine, GPU or not, and
report what the GPU's compiler reports: registers, spilled bytes and shared memory per
launch variant. The interpreter that runs the kernels in the CPU tests does not compile
them; this does, with the installed Triton and its own ptxas, at no GPU time.

    python benchmarks/kernel_build.py [--out benchmarks/kernel_build.json]

The launches are recorded from fastssl's own launch code (``fused_views`` and the fused
log-sum-exp's forward and backward, called on CPU tensors with the kernels swapped for
recorders), so the argument types, specialisations and constexprs are those a training
step uses: the view kernel for 32 and 64 px views in bf16 (training) and fp32; the
InfoNCE kernels for fp32 embeddings (what ``losses.infonce.unit`` feeds them) and bf16,
with MoCo's extra positive logit and with NT-Xent's excluded column.
"""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import triton  # noqa: E402
from triton._C.libtriton import native_specialize_impl  # noqa: E402
from triton.backends.compiler import BaseBackend, GPUTarget  # noqa: E402
from triton.backends.nvidia.compiler import get_ptxas  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from fastssl.cli import parse  # noqa: E402
from fastssl.kernels import contrastive  # noqa: E402
from pipelines import fused  # noqa: E402
from pipelines.spec import ViewConfig  # noqa: E402
from pipelines.views import ViewPipeline  # noqa: E402

HOPPER = GPUTarget("cuda", 90, 32)


@dataclass(frozen=True)
class Options:
    out: Path = Path("benchmarks/kernel_build.json")


@dataclass
class Launch:
    name: str
    kernel: Any  # a triton.JITFunction
    args: tuple
    kwargs: dict


class Recorder:
    """Stands in for a kernel: ``kernel[grid](*args, **kwargs)`` records the launch."""

    def __init__(self, kernel: Any, launches: list[Launch], name: str) -> None:
        self.kernel, self.launches, self.name = kernel, launches, name

    def __getitem__(self, grid: Any):
        return lambda *args, **kwargs: self.launches.append(Launch(self.name, self.kernel, args, kwargs))


def recorded(module: Any, kernels: list[str], call, label: str) -> list[Launch]:
    """The launches ``call()`` makes of ``module``'s ``kernels``, named ``<kernel> <label>``."""
    launches: list[Launch] = []
    originals = {name: getattr(module, name) for name in kernels}
    try:
        for name, kernel in originals.items():
            setattr(module, name, Recorder(kernel, launches, f"{name.strip('_')} {label}"))
        call()
    finally:
        for name, kernel in originals.items():
            setattr(module, name, kernel)
    return launches


def view_launches() -> list[Launch]:
    launches = []
    for side in (32, 64):
        images = torch.randint(0, 256, (8, 3, side, side), dtype=torch.uint8)
        sizes = torch.tensor([[side, side]] * 8)
        pipeline = ViewPipeline([ViewConfig(size=side)] * 2)
        params = pipeline.sample(sizes, torch.Generator().manual_seed(0))
        for dtype in (torch.bfloat16, torch.float32):
            call = lambda: fused.fused_views(images, sizes, params, pipeline.config, 2, dtype)  # noqa: B023, E731
            launches += recorded(fused, ["_views_kernel"], call, f"{side} px → {str(dtype)[6:]}")
    return launches


def infonce_launches() -> list[Launch]:
    launches = []
    n, m, d = 256, 4096, 128
    for dtype in (torch.float32, torch.bfloat16):
        for case, (extra, exclude) in {"moco (positive logit)": (True, False),
                                        "nt-xent (excluded column)": (False, True)}.items():
            q = torch.randn(n, d, dtype=dtype, requires_grad=True)
            c = torch.randn(m, d, dtype=dtype, requires_grad=True)
            positive = torch.randn(n) if extra else None
            excluded = torch.arange(n) if exclude else None

            def call(q=q, c=c, positive=positive, excluded=excluded) -> None:
                # The forward's output is never written (its launch is only recorded): the
                # backward's launches need its shape, not its values.
                contrastive._FusedLSE.apply(q, c, positive, excluded, 5.0).sum().backward()

            kernels = ["_lse_forward", "_lse_backward_queries", "_lse_backward_candidates"]
            launches += recorded(contrastive, kernels, call, f"{str(dtype)[6:]} {case}")
    return launches


def specialise(launch: Launch) -> tuple[dict, dict, dict]:
    """Signature, constexprs and attributes as Triton's launcher derives them from the
    arguments (so integer 1s, 16-byte alignment and divisibility count as they would)."""
    params, values = launch.kernel.params, list(launch.args)
    signature, constexprs, attrs = {}, {}, {}
    for i, param in enumerate(params):
        if param.is_constexpr:
            signature[param.name], constexprs[param.name] = "constexpr", launch.kwargs[param.name]
            continue
        kind, attr = native_specialize_impl(BaseBackend, values[i], param.is_const, not param.do_not_specialize,
                                            not param.do_not_specialize_on_alignment)
        signature[param.name] = kind
        if kind == "constexpr":
            constexprs[param.name] = attr
        elif isinstance(attr, str):
            attrs[(i,)] = BaseBackend.parse_attr(attr)
    return signature, constexprs, attrs


def ptxas_report(ptx: str) -> dict[str, int]:
    """Registers, spill stores/loads and stack frame bytes from ``ptxas -v`` on the PTX."""
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "kernel.ptx"
        source.write_text(ptx)
        result = subprocess.run([get_ptxas(90).path, "-v", "--gpu-name", "sm_90a", str(source),
                                 "-o", str(Path(folder) / "kernel.cubin")], capture_output=True, text=True, check=True)
    text = result.stdout + result.stderr
    numbers = {"registers": r"Used (\d+) registers", "spill_stores": r"(\d+) bytes spill stores",
               "spill_loads": r"(\d+) bytes spill loads", "stack_frame": r"(\d+) bytes stack frame"}
    return {key: int(re.search(pattern, text).group(1)) for key, pattern in numbers.items()}  # type: ignore[union-attr]


def build(launch: Launch) -> dict[str, Any]:
    """Compile one recorded launch for sm_90; its resources."""
    signature, constexprs, attrs = specialise(launch)
    warps = launch.kwargs.get("num_warps", 4)
    start = time.perf_counter()
    compiled = triton.compile(ASTSource(launch.kernel, signature, constexprs, attrs), target=HOPPER,
                              options={"num_warps": warps})
    return {"kernel": launch.name, "warps": warps, "shared_bytes": compiled.metadata.shared,
            "seconds": time.perf_counter() - start, **ptxas_report(compiled.asm["ptx"])}


def main(args: list[str] | None = None) -> None:
    opts = parse(Options, None, args, "kernel_build.py")
    rows = []
    for launch in view_launches() + infonce_launches():
        rows.append(build(launch))
        print(json.dumps(rows[-1]), flush=True)
    print(f"\nsm_90, Triton {triton.__version__}, ptxas {get_ptxas(90).version}\n")
    print("| kernel | warps | registers | spill stores B | spill loads B | shared KiB |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['kernel']} | {r['warps']} | {r['registers']} | {r['spill_stores']} | {r['spill_loads']} | "
              f"{r['shared_bytes'] / 1024:.0f} |")
    record = {"target": "sm_90", "triton": triton.__version__, "ptxas": get_ptxas(90).version,
              "date": time.strftime("%Y-%m-%d"), "options": {k: str(v) for k, v in dataclasses.asdict(opts).items()},
              "kernels": rows}
    opts.out.write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
