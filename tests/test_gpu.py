"""GPU checks: the same step on CUDA, without host-device synchronisation. Skipped
without CUDA; run with ``python -m pytest -m gpu``."""

import pytest
import torch

from fastssl.methods.base import Progress
from fastssl.recipes import get
from fastssl.train.build import build
from fastssl.train.step import Meter, train_step

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.mark.parametrize("name", ["mocov2", "simclr"])
def test_training_steps_do_not_synchronise(name, gpu_dataset):
    method = {"queue_size": 64} if name == "mocov2" else {}
    recipe = get(name)
    cfg = recipe.preset("cifar10", data=gpu_dataset, optim={"batch_size": 32, "epochs": 1},
                        model={"width": 16, "bn_splits": 2}, method=method,
                        run={"progress_bar": False, "knn_before_training": False, "log_every_steps": 1000})
    parts = build(recipe, cfg)
    batches, meter = iter(parts.loader), Meter()
    train_step(parts, next(batches), Progress(0, 0, len(parts.loader), 1), meter)  # warm-up
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for step in range(1, 3):
            train_step(parts, next(batches), Progress(0, step, len(parts.loader), 1), meter)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(torch.tensor(meter.read()["loss"]))
