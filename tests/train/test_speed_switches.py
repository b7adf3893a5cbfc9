"""The speed switches change how a step runs, not what it computes: the same losses for a
few steps with each switch off and on (CPU here; the GPU test runs them with CUDA graphs)."""

import json

import pytest
import torch

from fastssl.recipes.launch import main as run_recipe

TINY = ["--model.width", "8", "--model.bn-splits", "2", "--optim.batch-size", "16", "--run.eval-batch-size", "32",
        "--run.no-progress-bar", "--run.log-every-steps", "1", "--optim.epochs", "1", "--run.stop-after-steps", "3",
        "--run.no-knn-before-training", "--method.queue-size", "32"]


def losses(data, out, name, *switches):
    run_recipe("mocov2", ["--data", str(data), "--run.out-dir", str(out), "--run.name", name, *TINY, *switches])
    records = [json.loads(line) for line in (out / name / "metrics.jsonl").read_text().splitlines()]
    return torch.tensor([r["loss"] for r in records if r["kind"] == "train"])


def test_fused_optimizer_gives_the_same_losses(tiny_dataset, tmp_path):
    plain = losses(tiny_dataset, tmp_path, "plain", "--run.fused-optimizer", "False")
    fused = losses(tiny_dataset, tmp_path, "fused", "--run.fused-optimizer", "True")
    torch.testing.assert_close(fused, plain, rtol=1e-5, atol=1e-5)


def test_compiled_networks_give_the_same_losses(tiny_dataset, tmp_path):
    eager = losses(tiny_dataset, tmp_path, "eager", "--run.compile", "False")
    compiled = losses(tiny_dataset, tmp_path, "compiled", "--run.compile", "True")
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-4)  # kernel fusion reorders sums


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_compiled_cuda_graphs_and_fused_optimizer_on_the_gpu(gpu_dataset, tmp_path):
    off = ["--run.compile", "False", "--run.fused-optimizer", "False"]
    on = ["--run.compile", "True", "--run.cuda-graphs", "True", "--run.fused-optimizer", "True"]
    eager = losses(gpu_dataset, tmp_path, "eager", *off)
    fast = losses(gpu_dataset, tmp_path, "fast", *on)
    torch.testing.assert_close(fast, eager, rtol=2e-2, atol=2e-2)  # bf16 autocast in both; fusion reorders sums
