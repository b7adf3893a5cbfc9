"""The main job, end to end, on the embedded CIFAR-10 sample (README's first command).

    python demo/run.py [recipe overrides, e.g. --optim.epochs 4]

Converts ``demo/cifar10-sample.tar.gz`` (5,000 training and 1,000 test images, cut from
the shared CIFAR-10 JPEG archive by ``demo/make_sample.py``) into ``data/demo-cifar10``,
trains MoCo v2 with the ``demo`` preset, evaluates 200-NN accuracy before and after, and
says whether training helped by more than three standard errors of the test accuracy.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fastssl.recipes.launch import main as run_recipe  # noqa: E402
from fastssl.train.loop import standard_error_pct  # noqa: E402

SAMPLE = ROOT / "demo" / "cifar10-sample.tar.gz"
DATA = ROOT / "data" / "demo-cifar10"


def main() -> None:
    start = time.perf_counter()
    if not DATA.exists():
        subprocess.run([sys.executable, str(ROOT / "tools" / "convert.py"), str(SAMPLE), str(DATA)], check=True)
    name = time.strftime("demo-mocov2-%Y%m%d-%H%M%S")
    args = ["--data", str(DATA), "--preset", "demo", "--run.name", name,
            "--run.out-dir", str(ROOT / "runs"), *sys.argv[1:]]
    summary = run_recipe("mocov2", args)

    knn = summary["knn"]["student"]
    if "last" not in knn:
        return
    gain = knn["last"] - knn["before_training"]
    three_se = 3 * standard_error_pct(knn["last"], summary["knn_test_images"])
    verdict = "training helped" if gain > three_se else "NOT significant"
    print(f"demo: kNN {knn['before_training']:.1f}% → {knn['last']:.1f}% (gain {gain:+.1f} points, "
          f"3 standard errors = {three_se:.1f}): {verdict}; total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
