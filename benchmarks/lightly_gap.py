"""Issue 14, part 3: which difference between lightly 1.6's MoCo v2 and fastssl's demo costs
fastssl's demo its kNN points? Each factor alone (and the two that helped, together), on
fastssl's demo preset, three seeds.

    python benchmarks/lightly_gap.py [--data data/demo-cifar10] [--factors NAME ...] [--seeds 0 1 2]

Every run is ``recipes/mocov2.py --preset demo`` (ResNet-18 width 16, 2 BN groups, batch 64,
8 epochs on the 5,000-image CIFAR-10 sample, lr 0.06, queue 1024) in its own process, with
one factor set as lightly's MoCo v2 parts have it:

* ``imagenet-stats``: lightly's transforms normalise with ImageNet's statistics by default;
  the recipe with CIFAR-10's (Mini-SSL's data_public.py).
* ``no-shuffle-bn``: lightly's MoCo example does not shuffle the key batch across BN
  groups; the recipe does (He et al., §3.3; Mini-SSL).
* ``torch-init``: lightly's ``ResNetGenerator`` keeps PyTorch's default initialisation of
  every convolution (Kaiming-uniform, a = √5); the recipe's ResNet takes torchvision's
  (Kaiming-normal, fan-out), as Mini-SSL's torchvision ResNet does.
* ``one-direction``: N keys enter the queue a step, not 2N, with one query direction
  (MoCo's original loss; Mini-SSL's ``--symmetric``, which the recipe follows, adds the
  other direction and its keys). lightly's ``NTXentLoss`` memory bank enqueues the keys of
  each call.
* ``narrow-head``: the projection's hidden layer as wide as the features (lightly's
  examples build ``MoCoProjectionHead(512, 512, 128)`` for a ResNet-18), not Mini-SSL's
  2048.
* ``temperature-0.1``: τ 0.1, as lightly's MoCo tutorial on CIFAR-10 (its memory-bank
  tutorial: ``NTXentLoss(temperature=0.1, memory_bank_size=4096)``), not Mini-SSL's 0.2.
* ``narrow-head+temperature-0.1``: the two together, the only factors that raised the kNN.

Not a factor: both blur each view with p 0.5, σ in (0.1, 2) (lightly's ``MoCoV2Transform``;
the recipe's Mini-SSL views); how they blur (PIL's extended box blur against fastssl's
13-tap Gaussian) is not tested here.

Writes ``benchmarks/lightly_gap.json``: per factor and seed, the 200-NN accuracy before and
after training and the wall time.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FACTORS: dict[str, list[str]] = {
    "baseline": [],
    "imagenet-stats": ["--views.mean", "0.485", "0.456", "0.406", "--views.std", "0.229", "0.224", "0.225"],
    "no-shuffle-bn": ["--method.no-shuffle-bn"],
    "torch-init": [],  # applied in this process (``run_one``)
    "one-direction": ["--method.no-symmetric"],
    "narrow-head": ["--method.proj-hidden", "128"],
    "temperature-0.1": ["--method.temperature", "0.1"],
    "narrow-head+temperature-0.1": ["--method.proj-hidden", "128", "--method.temperature", "0.1"],
}


def torch_default_init() -> None:
    """Every convolution of fastssl's ResNet re-initialised as PyTorch's default (lightly's
    ``ResNetGenerator`` applies no other)."""
    from torch import nn

    from fastssl.models import resnet

    made = resnet.ResNet.__init__

    def init(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        made(self, *args, **kwargs)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                module.reset_parameters()

    resnet.ResNet.__init__ = init  # type: ignore[method-assign]


def run_one(factor: str, seed: int, data: Path, out_dir: Path) -> dict:
    sys.path.insert(0, str(REPO))
    if factor == "torch-init":
        torch_default_init()
    from fastssl.recipes.launch import main

    name = f"{factor}-seed{seed}"
    summary = main("mocov2", ["--preset", "demo", "--data", str(data), "--run.seed", str(seed),
                              "--run.out-dir", str(out_dir), "--run.name", name, "--run.no-progress-bar",
                              *FACTORS[factor]])
    knn = summary["knn"]["student"]
    return {"factor": factor, "seed": seed, "knn_before": knn["before_training"], "knn_after": knn["last"],
            "wall_time_s": summary["wall_time_s"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=REPO / "data/demo-cifar10")
    parser.add_argument("--factors", nargs="+", default=list(FACTORS), choices=list(FACTORS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--out-dir", type=Path, default=REPO / "runs/lightly-gap")
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks/lightly_gap.json")
    parser.add_argument("--one", nargs=2, metavar=("FACTOR", "SEED"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one[0], int(args.one[1]), args.data, args.out_dir)))
        return
    results = json.loads(args.output.read_text()) if args.output.exists() else []
    done = {(r["factor"], r["seed"]) for r in results}
    for factor in args.factors:
        for seed in args.seeds:
            if (factor, seed) in done:
                continue
            line = subprocess.run([sys.executable, __file__, "--data", str(args.data), "--out-dir", str(args.out_dir),
                                   "--one", factor, str(seed)], check=True, capture_output=True, text=True)
            results.append(json.loads(line.stdout.strip().splitlines()[-1]))
            args.output.write_text(json.dumps(results, indent=1) + "\n")
            print(results[-1], flush=True)


if __name__ == "__main__":
    main()
