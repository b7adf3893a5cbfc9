"""Two gloo processes on the CPU against one process: the recipe script trained end to end
(checkpoint, kNN monitor, summary), the synchronised BN layer and the full-gradient
gather on their own, and the warning when a launcher meant several processes and one
started. Every method's 2-vs-1 comparison is in ``test_distributed_methods.py``."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch
import torch.multiprocessing as mp

ROOT = Path(__file__).resolve().parents[1]
# MoCo v2 with its key shuffle, one whole epoch of 4 steps (so the final kNN evaluation
# runs on the trained networks): the shuffle is drawn for the global batch and every BN
# group holds the same images whether the global batch of 16 is one process's or split
# over two (bn-splits counts global groups).
ARGS = ["--model.width", "8", "--model.bn-splits", "2", "--optim.batch-size", "16", "--method.queue-size", "32",
        "--method.proj-hidden", "32", "--optim.epochs", "1", "--run.no-progress-bar", "--run.eval-batch-size", "16"]
LAUNCH = ["-m", "accelerate.commands.launch", "--num_machines", "1", "--mixed_precision", "no",
          "--dynamo_backend", "no"]
WARNING = "fastssl: warning: launched for several processes but running in one"


def run_script(data, out, launch=(), args=ARGS):
    command = [*launch, str(ROOT / "recipes" / "mocov2.py"), "--data", str(data), "--run.out-dir", str(out), *args]
    env = {k: v for k, v in os.environ.items() if k not in ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE")}
    env.update(ACCELERATE_USE_CPU="1", OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, *command], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def train(data, out, processes):
    launch = [*LAUNCH, "--multi_gpu", "--num_processes", str(processes)] if processes > 1 else []
    run_script(data, out, launch)
    run_dir = out / "mocov2-tiny"
    state = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    return state, json.loads((run_dir / "summary.json").read_text())


def test_two_processes_match_one(tiny_dataset, tmp_path):
    single, single_summary = train(tiny_dataset, tmp_path / "one", 1)
    double, double_summary = train(tiny_dataset, tmp_path / "two", 2)
    assert double_summary["processes"] == 2 and single_summary["processes"] == 1
    assert single["epoch_done"] == double["epoch_done"] == 1
    for part in ("method", "probe"):
        assert double[part].keys() == single[part].keys()
        for key, value in single[part].items():
            # every tensor, the BN running statistics too (synchronised, or averaged over the
            # processes every step); fp32 tolerances as in test_distributed_methods.py
            torch.testing.assert_close(double[part][key], value, rtol=1e-4, atol=1e-5, msg=f"{part}.{key}")
    # Evaluation shards the images over the processes, each with the same trained networks
    # and statistics; the features differ by rounding only, so at most a near-tie among a
    # test image's neighbours could vote differently (one image of 24).
    for network in ("student", "teacher"):
        one, two = (s["knn"][network] for s in (single_summary, double_summary))
        assert abs(one["last"] - two["last"]) <= 100 / 24 + 1e-9, network


def test_a_launcher_that_starts_one_of_several_processes_is_named(tiny_dataset, tmp_path):
    """``accelerate launch --cpu --num_processes 2`` (the simple launcher) starts one
    process; it sets MASTER_ADDR/MASTER_PORT but not WORLD_SIZE. The run goes on, with one
    line on stderr saying how to launch several CPU processes."""
    args = [*ARGS, "--run.stop-after-steps", "1", "--run.no-knn-before-training"]
    result = run_script(tiny_dataset, tmp_path, [*LAUNCH, "--cpu", "--num_processes", "2"], args)
    lines = [line for line in result.stderr.splitlines() if WARNING in line]
    assert len(lines) == 1, result.stderr[-3000:]
    assert "ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2" in lines[0]
    summary = json.loads((tmp_path / "mocov2-tiny" / "summary.json").read_text())
    assert summary["processes"] == 1


def test_the_warning_needs_a_launcher_that_meant_several(monkeypatch, capsys):
    from fastssl.train.build import warn_if_one_of_several

    for name in ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    warn_if_one_of_several(1)  # a plain `python recipes/x.py`
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "29500")
    warn_if_one_of_several(2)  # several started after all
    assert capsys.readouterr().err == ""
    monkeypatch.setenv("WORLD_SIZE", "1")
    warn_if_one_of_several(1)  # torchrun with one process, on purpose
    assert capsys.readouterr().err == ""
    monkeypatch.delenv("WORLD_SIZE")
    warn_if_one_of_several(1)
    assert capsys.readouterr().err.count("\n") == 1


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


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
    mp.spawn(_full_gather_gradient, args=(2, free_port(), tmp_path), nprocs=2)
    x = torch.arange(12.0).view(6, 2).requires_grad_()
    (x.T @ x).square().sum().backward()
    gathered = torch.cat([torch.load(tmp_path / f"grad{r}.pt") for r in range(2)])
    # each process's copy of the loss contributes, so the sum over processes is 2×; DDP's
    # averaging over the 2 processes then gives exactly the single-process gradient
    torch.testing.assert_close(gathered, 2 * x.grad)


def _batch_norms():
    """A BN2d with affine parameters and a BN1d without, as the heads have, in fp64."""
    torch.manual_seed(0)
    norms = torch.nn.ModuleList([torch.nn.BatchNorm2d(3), torch.nn.BatchNorm1d(5, affine=False)]).double()
    with torch.no_grad():
        norms[0].weight.uniform_(0.5, 1.5)
        norms[0].bias.uniform_(-1, 1)
    inputs = [torch.randn(8, 3, 4, 4, dtype=torch.float64) * 3 + 1, torch.randn(8, 5, dtype=torch.float64) - 2]
    targets = [torch.randn_like(x) for x in inputs]
    return norms, inputs, targets


def _sync_batch_norm(rank, world, port, out):
    import torch.distributed as dist

    from fastssl.distributed import SyncBatchNorm, convert_sync_bn
    from fastssl.models.norm import SplitBatchNorm2d

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    norms, inputs, targets = _batch_norms()
    convert_sync_bn(norms)
    split = convert_sync_bn(torch.nn.Sequential(SplitBatchNorm2d(3, 2)))
    assert [type(m) for m in norms] == [SyncBatchNorm, SyncBatchNorm] and type(split[0]) is SplitBatchNorm2d
    share = slice(4 * rank, 4 * rank + 4)
    results = {}
    for i, (norm, x, target) in enumerate(zip(norms, inputs, targets, strict=True)):
        mine = x[share].clone().requires_grad_()
        y = norm(mine)
        (y * target[share]).sum().backward()  # this process's share of Σ y·t
        with torch.no_grad():
            norm(x[share].flip(0))  # a teacher's pass: statistics synchronised without autograd
        results[i] = {"y": y.detach(), "grad": mine.grad, "state": norm.state_dict(),
                      "params": [p.grad for p in norm.parameters()]}
    torch.save(results, out / f"bn{rank}.pt")
    dist.destroy_process_group()


def test_sync_batch_norm_is_batch_norm_over_every_process_batch(tmp_path):
    """Forward, running statistics (also from a pass under no_grad), the input's gradient
    and the parameters' gradients summed over the processes: those of one BN on the whole
    batch, to fp64 rounding (gloo, the CPU, where torch's SyncBatchNorm refuses to run)."""
    mp.spawn(_sync_batch_norm, args=(2, free_port(), tmp_path), nprocs=2)
    ranks = [torch.load(tmp_path / f"bn{r}.pt") for r in range(2)]
    norms, inputs, targets = _batch_norms()
    for i, (norm, x, target) in enumerate(zip(norms, inputs, targets, strict=True)):
        x = x.clone().requires_grad_()
        y = norm(x)
        (y * target).sum().backward()
        with torch.no_grad():
            norm(torch.cat([x[:4].flip(0), x[4:].flip(0)]))
        torch.testing.assert_close(torch.cat([r[i]["y"] for r in ranks]), y.detach())
        torch.testing.assert_close(torch.cat([r[i]["grad"] for r in ranks]), x.grad)
        for p, *shares in zip(norm.parameters(), *(r[i]["params"] for r in ranks), strict=True):
            torch.testing.assert_close(sum(shares), p.grad)
        for key, value in norm.state_dict().items():
            for r in ranks:
                torch.testing.assert_close(r[i]["state"][key], value, msg=key)


def workers_of(launcher: int) -> list[int]:
    """The processes the launcher started (its children, from /proc)."""
    children = []
    for task in Path(f"/proc/{launcher}/task").iterdir():
        children += [int(pid) for pid in (task / "children").read_text().split()]
    return children


def test_a_signal_to_one_of_two_processes_stops_both_at_the_same_step(tiny_dataset, tmp_path):
    """SIGTERM to rank 1 alone: both ranks stop at the next logging boundary with one
    checkpoint, both leave with 143, and the run resumes with two processes."""
    import signal
    import time

    args = [*ARGS[:-5], "--optim.epochs", "20", "--run.log-every-steps", "2", "--run.no-progress-bar",
            "--run.eval-batch-size", "16", "--optim.warmup-epochs", "1"]
    command = [sys.executable, *LAUNCH, "--multi_gpu", "--num_processes", "2", str(ROOT / "recipes" / "mocov2.py"),
               "--data", str(tiny_dataset), "--run.out-dir", str(tmp_path), *args]
    env = {k: v for k, v in os.environ.items() if k not in ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE")}
    env.update(ACCELERATE_USE_CPU="1", OMP_NUM_THREADS="1")
    launcher = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    metrics = tmp_path / "mocov2-tiny" / "metrics.jsonl"
    while not (metrics.exists() and '"kind": "train"' in metrics.read_text()):
        assert launcher.poll() is None, launcher.communicate()
        time.sleep(0.05)
    workers = workers_of(launcher.pid)
    assert len(workers) == 2
    os.kill(max(workers), signal.SIGTERM)  # one worker only
    _, stderr = launcher.communicate()
    stops = [line for line in stderr.splitlines() if "stopped by SIGTERM" in line]
    assert len(stops) == 2 and len(set(stops)) == 1, stderr[-3000:]  # the same step named by both
    state = torch.load(tmp_path / "mocov2-tiny" / "checkpoint.pt", weights_only=False)
    assert state["epoch_done"] < 20 and state["loader"]["step"] % 2 == 0  # at a logging boundary
    run_script(tiny_dataset, tmp_path, [*LAUNCH, "--multi_gpu", "--num_processes", "2"],
               ["--resume", "--run.stop-after-steps", "2", "--run.no-progress-bar"])
    resumed = torch.load(tmp_path / "mocov2-tiny" / "checkpoint.pt", weights_only=False)["loader"]
    assert resumed["epoch"] * 4 + resumed["step"] == state["loader"]["epoch"] * 4 + state["loader"]["step"] + 2
