"""Two gloo processes on the CPU against one process: the same training, step for step."""

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
# MoCo v2 without the key shuffle: every BN group then holds the same images whether the
# global batch of 16 is one process's or split over two (bn-splits counts global groups).
ARGS = ["--model.width", "8", "--model.bn-splits", "2", "--optim.batch-size", "16", "--method.queue-size", "32",
        "--method.no-shuffle-bn", "--optim.epochs", "1", "--run.stop-after-steps", "3", "--run.no-progress-bar",
        "--run.eval-batch-size", "16"]


def train(data, out, processes):
    command = [str(ROOT / "recipes" / "mocov2.py"), "--data", str(data), "--run.out-dir", str(out), *ARGS]
    if processes > 1:
        launch = ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
                  "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
        command = launch + command
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, *command], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = out / "mocov2-tiny"
    state = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    return state, json.loads((run_dir / "summary.json").read_text())


def test_two_processes_match_one(tiny_dataset, tmp_path):
    single, single_summary = train(tiny_dataset, tmp_path / "one", 1)
    double, double_summary = train(tiny_dataset, tmp_path / "two", 2)
    assert double_summary["processes"] == 2
    for part in ("method", "probe"):
        for key, value in single[part].items():
            if "running_" in key or "num_batches_tracked" in key:
                continue  # BN running statistics are per process under DDP (rank 0's are saved)
            torch.testing.assert_close(double[part][key], value, rtol=1e-4, atol=1e-5, msg=f"{part}.{key}")
    # Evaluation uses each run's running statistics, so kNN accuracy is close, not equal.
    assert abs(single_summary["knn"]["student"]["before_training"]
               - double_summary["knn"]["student"]["before_training"]) == 0


def _full_gather_gradient(rank, world, port, out):
    import torch.distributed as dist

    from fastssl.distributed import gather_with_full_grad

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    x = torch.arange(12.0).view(6, 2)[3 * rank : 3 * rank + 3].clone().requires_grad_()
    everything = gather_with_full_grad(x)
    loss = (everything.T @ everything).square().sum()  # a whole-batch statistic, as Barlow's
    loss.backward()
    torch.save(x.grad, out / f"grad{rank}.pt")
    dist.destroy_process_group()


def test_full_gather_gives_each_slice_the_gradient_of_the_whole_loss(tmp_path):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    mp.spawn(_full_gather_gradient, args=(2, port, tmp_path), nprocs=2)
    x = torch.arange(12.0).view(6, 2).requires_grad_()
    (x.T @ x).square().sum().backward()
    gathered = torch.cat([torch.load(tmp_path / f"grad{r}.pt") for r in range(2)])
    # each process's copy of the loss contributes, so the sum over processes is 2×; DDP's
    # averaging over the 2 processes then gives exactly the single-process gradient
    torch.testing.assert_close(gathered, 2 * x.grad)
