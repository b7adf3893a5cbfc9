"""GPU checks: the same step on CUDA, without host-device synchronisation. Skipped
without CUDA; run with ``python -m pytest -m gpu``."""

import pytest
import torch

from fastssl.recipe import build_trainer, load_recipe

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.mark.parametrize("name", ["mocov2", "simclr"])
def test_training_steps_do_not_synchronise(name, tmp_path, gpu_dataset):
    recipe = load_recipe(name)
    cfg = recipe.PRESETS["cifar10"]
    import dataclasses

    cfg = dataclasses.replace(
        cfg,
        data=gpu_dataset,
        optim=dataclasses.replace(cfg.optim, batch_size=32, epochs=1),
        model=dataclasses.replace(cfg.model, width=16, bn_splits=2),
        run=dataclasses.replace(cfg.run, out_dir=tmp_path, progress_bar=False, knn_before_training=False,
                                log_every_steps=1000),
    )
    if name == "mocov2":
        cfg = dataclasses.replace(cfg, method=dataclasses.replace(cfg.method, queue_size=64))
    trainer = build_trainer(recipe, cfg)
    batches = iter(trainer.loader)
    from fastssl.methods.base import Progress
    from fastssl.train.loop import Meter

    meter = Meter()
    trainer._step(next(batches), Progress(0, 0, len(trainer.loader), 1), meter)  # warm-up
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for step in range(1, 3):
            trainer._step(next(batches), Progress(0, step, len(trainer.loader), 1), meter)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(torch.tensor(meter.read()["loss"]))
