"""The training loop. The ``Accelerator`` owns device, precision and processes; methods
and loaders below it decide none of these.

bf16 autocast on CUDA, fp32 on the CPU (where bf16 autocast is 15–25× slower); weights
and views channels-last everywhere. Nothing in a step reads a device value on the host:
metrics accumulate on the device and are read every ``log_every_steps``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import resource
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch import Tensor
from tqdm import tqdm

from fastssl.config import TrainConfig
from fastssl.distributed import convert_sync_bn
from fastssl.eval.collapse import collapse_metrics
from fastssl.eval.knn import extract_features, knn_accuracy
from fastssl.eval.online import OnlineProbe
from fastssl.methods.base import Method, Progress
from fastssl.models.backbone import Backbone, backbone_from_config
from fastssl.train import checkpoint
from fastssl.train.optim import build_optimizer
from fastssl.train.schedule import warmup_cosine
from pipelines.dataset import read_info
from pipelines.loader import Loader
from pipelines.views import ViewRecipe

CHECKPOINT = "checkpoint.pt"


class RunError(Exception):
    """A run that cannot start as asked (a bad path, a resume with nothing to resume)."""


def _git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent
        )
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def _peak_memory_mib(device: torch.device) -> tuple[float, str]:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda max allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "process peak RSS"


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    return value


class Meter:
    """Means of device scalars over the steps that reported them, read (one
    synchronisation) only when logged."""

    def __init__(self) -> None:
        self.sums: dict[str, Tensor] = {}
        self.counts: dict[str, int] = {}

    def add(self, values: dict[str, Tensor]) -> None:
        for name, value in values.items():
            value = value.detach().float()
            self.sums[name] = self.sums[name] + value if name in self.sums else value
            self.counts[name] = self.counts.get(name, 0) + 1

    def read(self) -> dict[str, float]:
        if not self.sums:
            return {}
        names = list(self.sums)
        values = torch.stack([self.sums[n] / self.counts[n] for n in names]).tolist()
        self.sums, self.counts = {}, {}
        return dict(zip(names, values, strict=True))


class Trainer:
    def __init__(
        self,
        cfg: TrainConfig,
        method_name: str,
        build_method: Callable[[Backbone], Method],
        views: ViewRecipe,
    ) -> None:
        self.cfg, self.method_name = cfg, method_name
        if not cfg.data.exists():
            raise RunError(f"--data {cfg.data}: no such directory")
        self.info = read_info(cfg.data)
        if cfg.run.deterministic:
            _make_deterministic()
        cuda = torch.cuda.is_available()
        precision = {"auto": "bf16" if cuda else "no", "bf16": "bf16", "fp32": "no"}[cfg.run.precision]
        self.accelerator = Accelerator(mixed_precision=precision, cpu=not cuda)
        acc = self.accelerator
        self.device = acc.device
        set_seed(cfg.run.seed)
        name = cfg.run.name or f"{method_name}-{cfg.data.resolve().name}"
        self.run_dir = cfg.run.out_dir / name
        self.checkpoint_path = self.run_dir / CHECKPOINT
        if cfg.resume and not self.checkpoint_path.exists():
            raise RunError(f"--resume: {self.checkpoint_path} does not exist")
        if not cfg.resume and self.checkpoint_path.exists():
            raise RunError(
                f"{self.run_dir} already holds a run: pass --resume to continue it "
                "or --run.name to start another"
            )

        switch = lambda value, default: default if value is None else value  # noqa: E731
        views.configure(switch(cfg.run.fused_views, cuda), torch.bfloat16 if precision == "bf16" else torch.float32)
        self.loader = Loader(
            cfg.data, views, cfg.optim.batch_size, self.device, cfg.run.seed,
            acc.process_index, acc.num_processes, cfg.train_splits,
        )
        m, o = cfg.model, cfg.optim
        # Split-BN groups are counted per view over the global batch and shared out over
        # the processes: each group holds batch/bn_splits images of one view.
        per_process, world = o.batch_size // acc.num_processes, acc.num_processes
        group_size = 1
        if m.norm == "split_bn":
            if m.bn_splits % world or per_process % (m.bn_splits // world):
                raise RunError(
                    f"--model.bn-splits {m.bn_splits}: must share out over {world} processes and split "
                    f"their {per_process} images per view evenly"
                )
            group_size = per_process // (m.bn_splits // world)
        backbone = backbone_from_config(m, views.first.size, group_size)
        if m.norm == "sync_bn":
            backbone = convert_sync_bn(backbone)  # type: ignore[assignment]
        memory_format = torch.channels_last if cfg.run.channels_last else torch.contiguous_format
        self.method = build_method(backbone).to(self.device).to(memory_format=memory_format)
        if o.accumulate_steps > 1 and not self.method.accumulation_safe:
            raise RunError(
                f"--optim.accumulate-steps {o.accumulate_steps}: {method_name}'s loss depends on the whole "
                "batch (in-batch negatives, BN statistics or a queue), so accumulating gradients over "
                "smaller batches would train a different method; use more processes or a smaller --optim.batch-size"
            )
        self.method.bind_student(acc.prepare_model(self.method.student))
        self.probe = OnlineProbe(backbone.feature_dim, self.info.num_classes).to(self.device)
        self.probe_call = acc.prepare_model(self.probe)
        self.optimizer = build_optimizer(self.method.param_groups(o), o, fused=switch(cfg.run.fused_optimizer, cuda))
        # torch.compile's mode for the networks ("reduce-overhead": CUDA graphs), None when
        # they run eagerly
        self.compile_mode: str | None = None
        if switch(cfg.run.compile, cuda):
            self.compile_mode = "reduce-overhead" if switch(cfg.run.cuda_graphs, cuda) else "default"
            # In place (nn.Module.compile), so state-dict keys and checkpoints are unchanged.
            for network in self.method.compiled_networks():
                network.compile(mode=self.compile_mode)
        self.probe_optimizer = torch.optim.SGD(
            self.probe.parameters(), lr=o.probe_lr, momentum=0.9, weight_decay=0.0
        )
        self.steps_per_epoch = len(self.loader)
        self.history: list[dict[str, Any]] = []
        self.train_seconds = 0.0
        self.images_seen = 0
        self.epoch_done = 0  # epochs fully trained
        if cfg.resume:
            self._load()

    @property
    def graphed(self) -> bool:
        """Whether the compiled networks are captured as CUDA graphs."""
        return self.compile_mode == "reduce-overhead"

    # --- checkpoints ------------------------------------------------------------------

    def _state(self) -> dict[str, Any]:
        return {
            "method_name": self.method_name,
            "method": self.method.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "probe": self.probe.state_dict(),
            "probe_optimizer": self.probe_optimizer.state_dict(),
            "loader": self.loader.state_dict(),
            "rng": checkpoint.rng_state(),
            "history": self.history,
            "train_seconds": self.train_seconds,
            "images_seen": self.images_seen,
            "epoch_done": self.epoch_done,
            "config": _jsonable(self.cfg),
        }

    def _save(self) -> None:
        if self.accelerator.is_main_process:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            checkpoint.save_atomic(self._state(), self.checkpoint_path)
        self.accelerator.wait_for_everyone()

    def _load(self) -> None:
        state = checkpoint.load(self.checkpoint_path)
        self.method.load_state_dict(state["method"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.probe.load_state_dict(state["probe"])
        self.probe_optimizer.load_state_dict(state["probe_optimizer"])
        self.loader.load_state_dict(state["loader"])
        checkpoint.set_rng_state(state["rng"])
        self.history = state["history"]
        self.train_seconds, self.images_seen = state["train_seconds"], state["images_seen"]
        self.epoch_done = state["epoch_done"]

    # --- logging ----------------------------------------------------------------------

    def _log(self, record: dict[str, Any]) -> None:
        if record["kind"] == "eval":
            self.history.append(record)
        if self.accelerator.is_main_process:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            with open(self.run_dir / "metrics.jsonl", "a") as handle:
                handle.write(json.dumps(record) + "\n")
            if self.cfg.run.tensorboard:
                self._tensorboard(record)

    def _tensorboard(self, record: dict[str, Any]) -> None:
        """The same record as TensorBoard scalars (``kind/name`` against the global step)."""
        if not hasattr(self, "_writer"):
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as error:
                raise RunError("--run.tensorboard needs the tensorboard package: pip install -e '.[report]'") from error
            self._writer = SummaryWriter(str(self.run_dir / "tensorboard"))
        step = record["epoch"] * self.steps_per_epoch + record.get("step", 0)
        for name, value in record.items():
            if name not in ("kind", "epoch", "step") and isinstance(value, int | float):
                self._writer.add_scalar(f"{record['kind']}/{name}", value, step)
        self._writer.flush()

    # --- evaluation -------------------------------------------------------------------

    @torch.no_grad()
    def evaluate(self, epoch: int) -> dict[str, Any]:
        """kNN accuracy of every monitored backbone, and the online probe's test accuracy."""
        run, info, loader = self.cfg.run, self.info, self.loader
        self.method.eval()
        record: dict[str, Any] = {"kind": "eval", "epoch": epoch}
        start = time.perf_counter()
        with self.accelerator.autocast():
            for name, network in self.method.monitored_backbones().items():
                bank, bank_labels = extract_features(
                    network, loader.eval_loader(info.train_split, run.eval_batch_size),
                    info.splits[info.train_split]["count"],
                )
                test, test_labels = extract_features(
                    network, loader.eval_loader(info.eval_split, run.eval_batch_size),
                    info.splits[info.eval_split]["count"],
                )
                record[f"knn_{name}"] = knn_accuracy(
                    test, test_labels, bank, bank_labels, info.num_classes, run.knn_k, run.knn_temperature
                )
                if name == "student":
                    record["probe_test"] = self.probe.accuracy(test, test_labels)
        record["seconds"] = round(time.perf_counter() - start, 2)
        self.method.train()
        self._log(record)
        return record

    # --- training ---------------------------------------------------------------------

    def _step(self, batch: Any, progress: Progress, meter: Meter, diagnose: bool = False) -> None:
        """One optimisation step; ``diagnose`` also measures collapse (a logging step)."""
        o, acc = self.cfg.optim, self.accelerator
        if not self.cfg.run.channels_last:  # the NCHW baseline of the benchmarks
            batch = dataclasses.replace(batch, views={k: v.contiguous() for k, v in batch.views.items()})
        total = o.epochs * self.steps_per_epoch
        warmup = round(o.warmup_epochs * self.steps_per_epoch)
        lr = warmup_cosine(progress.global_step, total, warmup, o.lr, cosine=o.schedule == "cosine")
        for group in self.optimizer.param_groups:
            group["lr"] = o.lr if group.get("fixed_lr", False) else lr
        if self.graphed:
            # One step is one CUDA-graph generation whatever order the method calls its
            # networks in (the heuristic, "a new step at each call without a pending
            # backward", would split a step whose teacher runs before the student).
            torch.compiler.cudagraph_mark_step_begin()
        self.method.before_step(progress)
        with acc.autocast():
            out = self.method(batch)
            probe_loss, probe_acc = self.probe_call(out.features, batch.labels)
        if diagnose and out.embedding is not None:
            meter.add(collapse_metrics(out.embedding))
        acc.backward(out.loss + probe_loss)
        self.method.after_backward()
        self.optimizer.step()
        self.probe_optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.probe_optimizer.zero_grad(set_to_none=True)
        self.method.after_optimizer_step(progress)
        meter.add({"loss": out.loss, "probe_loss": probe_loss, "probe_train_acc": probe_acc, **out.metrics})

    def fit(self) -> dict[str, Any]:
        cfg, acc = self.cfg, self.accelerator
        run = cfg.run
        wall_start = time.perf_counter()
        if not self.history and run.knn_before_training:
            self.evaluate(epoch=0)
        steps_this_call, stopped = 0, False
        if self.loader.step >= self.steps_per_epoch:  # resumed right at an epoch's end
            self.loader.set_epoch(self.loader.epoch + 1)
        for epoch in range(self.loader.epoch, cfg.optim.epochs):
            if epoch != self.loader.epoch or self.loader.step == 0:
                self.loader.set_epoch(epoch)
            bar = tqdm(
                total=self.steps_per_epoch, initial=self.loader.step, desc=f"epoch {epoch + 1}/{cfg.optim.epochs}",
                disable=not (run.progress_bar and acc.is_main_process), leave=False, unit="step",
            )
            meter, window_start, window_images = Meter(), time.perf_counter(), 0
            for batch in self.loader:
                step = self.loader.step - 1
                last = self.loader.step == self.steps_per_epoch
                log_now = (step + 1) % run.log_every_steps == 0 or last
                progress = Progress(epoch, step, self.steps_per_epoch, cfg.optim.epochs)
                self._step(batch, progress, meter, diagnose=log_now)
                window_images += cfg.optim.batch_size
                steps_this_call += 1
                bar.update(1)
                if log_now:
                    values = meter.read()  # the one synchronisation of a logging window
                    if not math.isfinite(values["loss"]):
                        raise RunError(
                            f"the loss became {values['loss']} by epoch {epoch + 1} step {step + 1}: training "
                            f"diverged (try a lower --optim.lr-per-256 or a longer --optim.warmup-epochs); "
                            f"{self.checkpoint_path} holds the last finished epoch"
                        )
                    seconds = time.perf_counter() - window_start
                    self.train_seconds += seconds
                    self.images_seen += window_images
                    speed = window_images / seconds
                    lr = self.optimizer.param_groups[0]["lr"]
                    self._log({"kind": "train", "epoch": epoch, "step": step + 1, "lr": lr,
                               "images_per_s": round(speed, 1), "train_seconds": round(self.train_seconds, 2),
                               **values})
                    bar.set_postfix(loss=f"{values['loss']:.3f}", img_s=f"{speed:.0f}")
                    window_start, window_images = time.perf_counter(), 0
                out_of_time = run.stop_after_minutes is not None and (
                    time.perf_counter() - wall_start > 60 * run.stop_after_minutes
                )
                out_of_steps = run.stop_after_steps is not None and steps_this_call >= run.stop_after_steps
                stopped = out_of_time or out_of_steps
                if stopped and not last:  # at an epoch's end, finish the epoch first
                    break
            bar.close()
            if stopped and self.loader.step < self.steps_per_epoch:
                self.train_seconds += time.perf_counter() - window_start
                self.images_seen += window_images
                self._save()
                break
            self.epoch_done = epoch + 1
            final = self.epoch_done == cfg.optim.epochs
            if final or self.epoch_done % run.knn_every_epochs == 0:
                self.evaluate(self.epoch_done)
            if final or stopped or self.epoch_done % run.checkpoint_every_epochs == 0:
                self._save()
            if stopped:
                break
        finished = self.epoch_done == cfg.optim.epochs
        return self._summary(time.perf_counter() - wall_start, finished)

    def _summary(self, wall_seconds: float, finished: bool) -> dict[str, Any]:
        evals = [r for r in self.history if r["kind"] == "eval"]
        knn: dict[str, Any] = {}
        for name in self.method.monitored_backbones():
            key = f"knn_{name}"
            scored = [(r[key], r["epoch"]) for r in evals if key in r]
            trained = [s for s in scored if s[1] > 0]
            entry: dict[str, Any] = {}
            if scored and scored[0][1] == 0:
                entry["before_training"] = scored[0][0]
            if trained:
                entry["last"], entry["last_epoch"] = trained[-1]
                entry["best"], entry["best_epoch"] = max(trained)
            knn[name] = entry
        memory, memory_kind = _peak_memory_mib(self.device)
        test_count = self.info.splits[self.info.eval_split]["count"]
        summary = {
            "method": self.method_name,
            "data": str(self.cfg.data),
            "finished": finished,
            "epochs_done": self.epoch_done,
            "knn": knn,
            "knn_test_images": test_count,
            "online_probe_test": evals[-1].get("probe_test") if evals else None,
            "wall_time_s": round(self.train_seconds + sum(r["seconds"] for r in evals), 1),
            "this_call_wall_time_s": round(wall_seconds, 1),
            "train_time_s": round(self.train_seconds, 1),
            "images_per_s": round(self.images_seen / max(self.train_seconds, 1e-9), 1),
            "peak_memory_mib": round(memory, 1),
            "peak_memory_kind": memory_kind,
            "device": torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "cpu",
            "processes": self.accelerator.num_processes,
            "mixed_precision": self.accelerator.mixed_precision,
            "git_commit": _git_commit(),
            "torch": torch.__version__,
            "config": _jsonable(self.cfg),
        }
        if self.accelerator.is_main_process:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=1))
        return summary


def _make_deterministic() -> None:
    """Deterministic kernels (slower; errors where an op has no deterministic version)."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False


def standard_error_pct(accuracy_pct: float, count: int) -> float:
    """Binomial standard error of a test-set accuracy, in percentage points."""
    p = accuracy_pct / 100
    return 100 * math.sqrt(max(p * (1 - p), 1e-12) / count)
