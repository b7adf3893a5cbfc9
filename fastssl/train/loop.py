"""The epochs of a run: stepping, logging, evaluation, stopping and checkpoints, on the
parts ``fastssl.train.build`` made. The ``Accelerator`` owns device, precision and
processes; methods and loaders below it decide none of these.

bf16 autocast on CUDA, fp32 on the CPU (where bf16 autocast is 15–25× slower); weights
and views channels-last everywhere. Nothing in a step reads a device value on the host:
metrics accumulate on the device and are read every ``log_every_steps``.
"""

from __future__ import annotations

import json
import math
import resource
import subprocess
import time
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from fastssl.config import to_json
from fastssl.eval.knn import extract_features, knn_accuracy
from fastssl.methods.base import Progress
from fastssl.run_folder import CHECKPOINT, METRICS, SUMMARY, data_fingerprint, relative_paths
from fastssl.train import checkpoint
from fastssl.train.build import Parts, RunError
from fastssl.train.step import Meter, train_step


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


class Loop:
    """Trains ``parts`` into ``run_dir``: epochs of ``train_step``, a logging window every
    ``log_every_steps``, the kNN monitor every ``knn_every_epochs``, a checkpoint every
    ``checkpoint_every_epochs`` and whenever the run stops early. ``resume`` continues from
    the state of the run's checkpoint (``checkpoint.load``)."""

    def __init__(self, parts: Parts, run_dir: Path, resume: dict[str, Any] | None = None) -> None:
        self.parts, self.cfg, self.run_dir = parts, parts.cfg, run_dir
        self.checkpoint_path = run_dir / CHECKPOINT
        self.history: list[dict[str, Any]] = []  # the evaluation records
        self.resumes: list[dict[str, Any]] = []  # where the run was resumed, and what changed then
        self.train_seconds = 0.0
        self.images_seen = 0
        self.epoch_done = 0  # epochs fully trained
        self.data_meta_sha256 = data_fingerprint(self.cfg.data)  # the data set, wherever it moves
        if resume is not None:
            self._load(resume)

    @property
    def is_main(self) -> bool:
        return self.parts.accelerator.is_main_process

    # --- checkpoints ------------------------------------------------------------------

    def _state(self) -> dict[str, Any]:
        p = self.parts
        return {
            "method_name": p.recipe,
            "method": p.method.state_dict(),
            "optimizer": p.optimizer.state_dict(),
            "probe": p.probe.state_dict(),
            "probe_optimizer": p.probe_optimizer.state_dict(),
            "loader": p.loader.state_dict(),
            "rng": checkpoint.rng_state(),
            "history": self.history,
            "resumes": self.resumes,
            "train_seconds": self.train_seconds,
            "images_seen": self.images_seen,
            "epoch_done": self.epoch_done,
            "config": to_json(self.cfg),
            "relative_paths": relative_paths(self.cfg, self.run_dir),
            "data_meta_sha256": self.data_meta_sha256,
        }

    def _save(self) -> None:
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            checkpoint.save_atomic(self._state(), self.checkpoint_path)
        self.parts.accelerator.wait_for_everyone()

    def _load(self, state: dict[str, Any]) -> None:
        p = self.parts
        p.method.load_state_dict(state["method"])
        p.optimizer.load_state_dict(state["optimizer"])
        p.probe.load_state_dict(state["probe"])
        p.probe_optimizer.load_state_dict(state["probe_optimizer"])
        p.loader.load_state_dict(state["loader"])
        checkpoint.set_rng_state(state["rng"])
        self.history, self.resumes = state["history"], state.get("resumes", [])
        self.train_seconds, self.images_seen = state["train_seconds"], state["images_seen"]
        self.epoch_done = state["epoch_done"]

    def record_resume(self, changes: dict[str, Any], overridden: bool) -> None:
        """Note in the run's history (checkpoint, summary, metrics.jsonl) that it was resumed
        here, with the settings that changed (name → [stored, new])."""
        p = self.parts
        event = {"kind": "resume", "epoch": p.loader.epoch, "step": p.loader.step,
                 "date": time.strftime("%Y-%m-%d %H:%M:%S"), "changes": changes, "override": overridden}
        self.resumes.append(event)
        self._log(event)

    # --- logging ----------------------------------------------------------------------

    def _log(self, record: dict[str, Any]) -> None:
        if record["kind"] == "eval":
            self.history.append(record)
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            with open(self.run_dir / METRICS, "a") as handle:
                handle.write(json.dumps(record) + "\n")
            if self.cfg.run.tensorboard:
                self._tensorboard(record)

    def _tensorboard(self, record: dict[str, Any]) -> None:
        """The same record as TensorBoard scalars (``kind/name`` against the global step)."""
        if not hasattr(self, "_writer"):
            from torch.utils.tensorboard import SummaryWriter  # the [report] extra, checked by build

            self._writer = SummaryWriter(str(self.run_dir / "tensorboard"))
        step = record["epoch"] * self.parts.steps_per_epoch + record.get("step", 0)
        for name, value in record.items():
            if name not in ("kind", "epoch", "step") and isinstance(value, int | float):
                self._writer.add_scalar(f"{record['kind']}/{name}", value, step)
        self._writer.flush()

    # --- evaluation -------------------------------------------------------------------

    def evaluate(self, epoch: int) -> dict[str, Any]:
        record = evaluate(self.parts, epoch)
        self._log(record)
        return record

    # --- training ---------------------------------------------------------------------

    def fit(self) -> dict[str, Any]:
        """Train to ``optim.epochs`` or until a stop option says stop; the summary."""
        cfg, loader, steps_per_epoch = self.cfg, self.parts.loader, self.parts.steps_per_epoch
        run = cfg.run
        wall_start = time.perf_counter()
        if not self.history and run.knn_before_training:
            self.evaluate(epoch=0)
        steps_this_call, stopped = 0, False
        if loader.step >= steps_per_epoch:  # resumed right at an epoch's end
            loader.set_epoch(loader.epoch + 1)
        for epoch in range(loader.epoch, cfg.optim.epochs):
            if epoch != loader.epoch or loader.step == 0:
                loader.set_epoch(epoch)
            bar = tqdm(
                total=steps_per_epoch, initial=loader.step, desc=f"epoch {epoch + 1}/{cfg.optim.epochs}",
                disable=not (run.progress_bar and self.is_main), leave=False, unit="step",
            )
            meter, window_start, window_images = Meter(), time.perf_counter(), 0
            for batch in loader:
                step = loader.step - 1
                last = loader.step == steps_per_epoch
                log_now = (step + 1) % run.log_every_steps == 0 or last
                progress = Progress(epoch, step, steps_per_epoch, cfg.optim.epochs)
                train_step(self.parts, batch, progress, meter, diagnose=log_now)
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
                    lr = self.parts.optimizer.param_groups[0]["lr"]
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
            if stopped and loader.step < steps_per_epoch:
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
        for name in self.parts.method.monitored_backbones():
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
        p = self.parts
        memory, memory_kind = _peak_memory_mib(p.device)
        test_count = p.info.splits[p.info.eval_split]["count"]
        summary = {
            "method": p.recipe,
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
            "device": torch.cuda.get_device_name(p.device) if p.device.type == "cuda" else "cpu",
            "processes": p.accelerator.num_processes,
            "mixed_precision": p.accelerator.mixed_precision,
            "git_commit": _git_commit(),
            "torch": torch.__version__,
            "resumes": self.resumes,
            "config": to_json(self.cfg),
            "relative_paths": relative_paths(self.cfg, self.run_dir),
            "data_meta_sha256": self.data_meta_sha256,
        }
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / SUMMARY).write_text(json.dumps(summary, indent=1))
        return summary


@torch.no_grad()
def evaluate(parts: Parts, epoch: int) -> dict[str, Any]:
    """kNN accuracy of every monitored backbone, and the online probe's test accuracy: an
    ``eval`` record of ``metrics.jsonl``."""
    run, info, loader, method = parts.cfg.run, parts.info, parts.loader, parts.method
    method.eval()
    record: dict[str, Any] = {"kind": "eval", "epoch": epoch}
    start = time.perf_counter()
    with parts.accelerator.autocast():
        for name, network in method.monitored_backbones().items():
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
                record["probe_test"] = parts.probe.accuracy(test, test_labels)
    record["seconds"] = round(time.perf_counter() - start, 2)
    method.train()
    return record


def standard_error_pct(accuracy_pct: float, count: int) -> float:
    """Binomial standard error of a test-set accuracy, in percentage points."""
    p = accuracy_pct / 100
    return 100 * math.sqrt(max(p * (1 - p), 1e-12) / count)
