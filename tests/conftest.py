import json
import os

import numpy as np
import pytest
import torch

# Without a GPU the Triton kernels run in Triton's interpreter (set before any kernel is
# defined: tests/kernels compares them with their PyTorch references at tiny sizes).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from pipelines.tensor import write_split


def make_tensor_dataset(root, train=64, test=24, classes=4, size=32, seed=0):
    """A small tensor-format data set with class-dependent colours (something to learn)."""
    rng = np.random.default_rng(seed)
    splits = {}
    for split, count in (("train", train), ("test", test)):
        labels = np.arange(count) % classes
        images = rng.integers(0, 120, (count, size, size, 3), dtype=np.uint8)
        images[np.arange(count), :, :, labels % 3] += 100
        splits[split] = write_split(root / split, images, labels, [f"{split}/{i}" for i in range(count)])
    meta = {"format": "tensor", "version": 1, "source": "synthetic", "classes": [str(c) for c in range(classes)],
            "image_size": [size, size], "splits": splits}
    (root / "meta.json").write_text(json.dumps(meta))
    return root


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
