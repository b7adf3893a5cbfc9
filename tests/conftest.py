import json
import os
from pathlib import Path

# oneDNN's AVX2 kernel for the weight gradient of 1×1 convolutions (torch 2.14.1) corrupts
# memory on CPUs without AVX-512: with one thread the tiny ResNets of tests/methods crash
# every time, with two they hang now and then (a py-spy dump shows
# jit_avx2_1x1_convolution_bwd_weights_t spinning). Its SSE4.1 kernel is sound and gives
# the recorded golden values. On CPUs with AVX-512 its AVX-512 weight-gradient kernel
# corrupts the heap too ("double free or corruption" in mkldnn_convolution_backward_weights,
# every time, for the width-8 ImageNet-stem ResNet of tests/recipes/test_study_presets.py at
# 224 px; gdb backtrace, 2026-12-07), so SSE4.1 wherever AVX2 is. Set before the first
# convolution: oneDNN reads it once.
_cpu_flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
if "avx2" in _cpu_flags:
    os.environ.setdefault("ONEDNN_MAX_CPU_ISA", "SSE41")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

# Without a GPU the Triton kernels run in Triton's interpreter (set before any kernel is
# defined: tests/kernels compares them with their PyTorch references at tiny sizes).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from pipelines.formats.tensor import write_arrays  # noqa: E402
from pipelines.verify import fingerprint  # noqa: E402


def make_tensor_dataset(root, train=64, test=24, classes=4, size=32, seed=0):
    """A small tensor-format data set with class-dependent colours (something to learn)."""
    rng = np.random.default_rng(seed)
    splits = {}
    for split, count in (("train", train), ("test", test)):
        labels = np.arange(count) % classes
        images = rng.integers(0, 120, (count, size, size, 3), dtype=np.uint8)
        images[np.arange(count), :, :, labels % 3] += 100
        splits[split] = write_arrays(root / split, images, labels, [f"{split}/{i}" for i in range(count)])
        splits[split].update(fingerprint(root / split, splits[split]["sha256"]))  # as tools/convert.py records
    meta = {"format": "tensor", "version": 1, "source": "synthetic", "classes": [str(c) for c in range(classes)],
            "image_size": [size, size], "splits": splits}
    (root / "meta.json").write_text(json.dumps(meta))
    return root


@pytest.fixture(scope="session", autouse=True)
def _cache_outside_home(tmp_path_factory):
    """Verified data sets are remembered in $FASTSSL_CACHE_DIR: the tests' own, never the
    user's (subprocesses inherit it). Not XDG_CACHE_HOME: other libraries keep their caches
    there, and an empty one makes them rebuild (minutes on CI)."""
    os.environ["FASTSSL_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """64 training and 24 test images of 32×32 in 4 classes."""
    return make_tensor_dataset(tmp_path_factory.mktemp("data") / "tiny")


@pytest.fixture(scope="session")
def gpu_dataset(tmp_path_factory):
    return make_tensor_dataset(tmp_path_factory.mktemp("gpu") / "gpu", train=256, test=64)


@pytest.fixture(scope="session")
def trained_checkpoint(tiny_dataset, tmp_path_factory):
    """A finished one-epoch (two-step) MoCo v2 run on the tiny data set: its checkpoint."""
    from fastssl.recipes.launch import main as run_recipe

    out = tmp_path_factory.mktemp("runs")
    run_recipe("mocov2", [
        "--data", str(tiny_dataset), "--run.out-dir", str(out), "--model.width", "8", "--model.bn-splits", "2",
        "--optim.batch-size", "32", "--run.eval-batch-size", "32", "--run.no-progress-bar",
        "--run.log-every-steps", "1", "--optim.epochs", "1", "--method.queue-size", "32",
    ])
    return out / "mocov2-tiny" / "checkpoint.pt"
