"""The epochs of a run: stepping, logging, evaluation, stopping and checkpoints, on the
parts ``fastssl.train.build`` made. The ``Accelerator`` owns device, precision and
processes; methods and loaders below it decide none of these.

bf16 autocast on CUDA, fp32 on the CPU (where bf16 autocast is 15–25× slower); weights
and views channels-last everywhere. Nothing in a step reads a device value on the host:
metrics accumulate on the device and are read every ``log_every_steps``.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import resource
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm import tqdm

from fastssl.config import dotted, to_json
from fastssl.eval.knn import extract_features, knn_accuracy
from fastssl.methods.base import Progress
from fastssl.run_folder import CHECKPOINT, METRICS, SUMMARY, data_fingerprint, relative_paths
from fastssl.train import checkpoint
from fastssl.train.build import Parts, RunError
from fastssl.train.signals import StopSignals, exit_status, honoured
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


class Stopped(Exception):
    """A run stopped by a signal after writing its checkpoint; ``status`` is the exit
    status to leave with (128 + the signal's number)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class Window:
    """The open logging window: the device sums of its steps' metrics, and the images and
    seconds it has taken. Kept in a checkpoint, so a window cut by a stop stays whole."""

    def __init__(self, state: dict[str, Any] | None = None, device: torch.device | None = None) -> None:
        self.meter, self.images, self.before = Meter(), 0, 0.0
        if state is not None:
            self.meter.restore(state["meter"], device or torch.device("cpu"))
            self.images, self.before = state["images"], state["seconds"]
        self.start = time.perf_counter()

    @property
    def seconds(self) -> float:
        return self.before + time.perf_counter() - self.start

    def state(self) -> dict[str, Any]:
        return {"meter": self.meter.state(), "images": self.images, "seconds": self.seconds}


class Loop:
    """Trains ``parts`` into ``run_dir``: epochs of ``train_step``, a logging window every
    ``log_every_steps``, the kNN monitor every ``knn_every_epochs``, a checkpoint every
    ``checkpoint_every_epochs`` and whenever the run stops early (a stop option or a
    signal). ``resume`` continues from a checkpoint's state: ``metrics.jsonl`` is cut back
    to what that checkpoint had logged (the steps after it are trained and logged again)."""

    def __init__(self, parts: Parts, run_dir: Path, resume: dict[str, Any] | None = None) -> None:
        self.parts, self.cfg, self.run_dir = parts, parts.cfg, run_dir
        self.history: list[dict[str, Any]] = []  # the evaluation records
        self.resumes: list[dict[str, Any]] = []  # where the run was resumed, and what changed then
        self.train_seconds = 0.0
        self.images_seen = 0
        self.epoch_done = 0  # epochs fully trained
        self.metrics_lines = 0  # records in metrics.jsonl
        self.last_train: dict[str, Any] = {}  # the last logged window
        self.window = Window()
        self.tracking = False  # the trackers have been started
        self.best: dict[str, Any] | None = None  # {"knn": …, "epoch": …} of best.pt
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
            "window": self.window.state(),
            "metrics_lines": self.metrics_lines,
            "last_train": self.last_train,
            "best": self.best,
            "config": to_json(self.cfg),
            "relative_paths": relative_paths(self.cfg, self.run_dir),
            "data_meta_sha256": self.data_meta_sha256,
        }

    def where(self) -> str:
        loader = self.parts.loader
        return f"epoch {loader.epoch + 1} step {loader.step} of {self.parts.steps_per_epoch}"

    def last_good(self) -> str:
        """Which checkpoint holds the run's last good state, in words."""
        path, _ = checkpoint.newest_intact(self.run_dir)
        return f"{path} holds the state before it" if path is not None else "no checkpoint was written yet"

    def _save(self) -> Path:
        """A checkpoint of this step as the newest of the run's, unless any weight, buffer or
        optimiser state is not finite (then a ``RunError``, and the older ones stay)."""
        p = self.parts
        tensors = [*p.method.state_dict().values(), *p.probe.state_dict().values(),
                   *(t for state in p.optimizer.state.values() for t in state.values() if isinstance(t, Tensor))]
        if not checkpoint.all_finite(tensors):
            raise RunError(f"the weights are not finite at {self.where()}: no checkpoint written; {self.last_good()}")
        path = self.run_dir / CHECKPOINT
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            with self._writing(self.run_dir / CHECKPOINT):
                path = checkpoint.save_rotating(self._state(), self.run_dir, self.cfg.run.keep_checkpoints)
        p.accelerator.wait_for_everyone()
        return path

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
        self.last_train, self.best = state.get("last_train", {}), state.get("best")
        if "window" in state:
            self.window = Window(state["window"], p.device)
        if "metrics_lines" in state:
            self.metrics_lines = state["metrics_lines"]
            if self.is_main:
                self._cut_metrics(self.metrics_lines)

    @contextlib.contextmanager
    def _writing(self, path: Path) -> Iterator[None]:
        """A write to ``path`` whose failure (a full disk above all) ends the run in one line
        that names the path and the last good checkpoint (a failed write leaves the older
        files as they were)."""
        try:
            yield
        except OSError as error:
            reason = "no space left on the device" if error.errno == errno.ENOSPC else (error.strerror or str(error))
            raise RunError(f"{path}: cannot write, {reason}; {self.last_good()}") from error

    def _cut_metrics(self, lines: int) -> None:
        """Keep the first ``lines`` records of ``metrics.jsonl``: those after the checkpoint
        were made by steps that are trained again."""
        path = self.run_dir / METRICS
        if path.exists():
            kept = path.read_text().splitlines(keepends=True)[:lines]
            checkpoint.write_atomic(path, lambda temporary: temporary.write_text("".join(kept)))

    def _save_best(self, record: dict[str, Any]) -> None:
        """``best.pt``: the state at the evaluation with the best kNN accuracy so far."""
        key = f"knn_{self.cfg.run.best_network}"
        if key not in record or record["epoch"] == 0:
            return
        if self.best is None or record[key] > self.best["knn"]:
            self.best = {"knn": record[key], "epoch": record["epoch"], "network": self.cfg.run.best_network}
            if self.is_main:
                with self._writing(self.run_dir / checkpoint.BEST):
                    checkpoint.save_checksummed(self._state(), self.run_dir / checkpoint.BEST)

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
        self.metrics_lines += 1
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            with self._writing(self.run_dir / METRICS), open(self.run_dir / METRICS, "a") as handle:
                handle.write(json.dumps(record) + "\n")
        if self.cfg.run.trackers and record["kind"] in ("train", "eval"):
            self._track(record)

    def _track(self, record: dict[str, Any]) -> None:
        """The record's numbers to the run's trackers (``kind/name`` against the global step;
        accelerate logs on the main process only)."""
        acc = self.parts.accelerator
        if not self.tracking:
            settings = {k: v if isinstance(v, int | float | str | bool) else str(v)
                        for k, v in dotted(to_json(self.cfg)).items()}
            acc.init_trackers(self.run_dir.name, config=settings, init_kwargs={"wandb": {"dir": str(self.run_dir)}})
            self.tracking = True
        step = record["epoch"] * self.parts.steps_per_epoch + record.get("step", 0)
        acc.log({f"{record['kind']}/{k}": v for k, v in record.items()
                 if k not in ("kind", "epoch", "step") and isinstance(v, int | float)}, step=step)

    # --- evaluation -------------------------------------------------------------------

    def evaluate(self, epoch: int) -> dict[str, Any]:
        record = evaluate(self.parts, epoch)
        self._log(record)
        self._save_best(record)
        return record

    def _close_window(self, epoch: int, step: int, stop: int | None) -> int | None:
        """Log the open window (the means over its steps and over every process); the stop
        the processes agree on (``Meter.read_everywhere``). A non-finite loss ends the run
        with the step named."""
        values, stop = self.window.meter.read_everywhere(stop)  # the window's one synchronisation
        if not math.isfinite(values["loss"]):
            raise RunError(
                f"the loss became {values['loss']} by epoch {epoch + 1} step {step + 1}: training diverged "
                f"(try a lower --optim.lr-per-256 or a longer --optim.warmup-epochs); {self.last_good()}"
            )
        seconds, images = self.window.seconds, self.window.images
        self.train_seconds += seconds
        self.images_seen += images
        speed = images / max(seconds, 1e-9)
        self.last_train = {"kind": "train", "epoch": epoch, "step": step + 1,
                           "lr": self.parts.optimizer.param_groups[0]["lr"], "images_per_s": round(speed, 1),
                           "train_seconds": round(self.train_seconds, 2), **values}
        self._log(self.last_train)
        self.window = Window()
        return stop

    def fit(self) -> dict[str, Any]:
        """Train to ``optim.epochs`` or until a stop option or a signal says stop; the
        summary. A signal ends it with ``Stopped`` once the step's checkpoint is written."""
        with StopSignals(honoured(self.cfg.run.stop_signals)) as signals:
            try:
                summary = self._epochs(signals)
            finally:
                if self.tracking:
                    self.parts.accelerator.end_training()  # the trackers flush and close
            if signals.received is not None:
                path = self.run_dir / CHECKPOINT
                signals.hand_over()  # submitit's requeue, when it installed a handler first
                raise Stopped(f"stopped by {signals.name} at {self.where()}; {path} holds it: resume with "
                              f"python recipes/{self.parts.recipe}.py --resume-from {self.run_dir}",
                              exit_status(signals.received))
        return summary

    def _epochs(self, signals: StopSignals) -> dict[str, Any]:
        cfg, loader, steps_per_epoch = self.cfg, self.parts.loader, self.parts.steps_per_epoch
        run, single = cfg.run, self.parts.accelerator.num_processes == 1
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
            self.window.start = time.perf_counter()  # evaluations are not training time
            for batch in loader:
                step = loader.step - 1
                last = loader.step == steps_per_epoch
                log_now = (step + 1) % run.log_every_steps == 0 or last
                progress = Progress(epoch, step, steps_per_epoch, cfg.optim.epochs)
                train_step(self.parts, batch, progress, self.window.meter, diagnose=log_now)
                self.window.images += cfg.optim.batch_size
                steps_this_call += 1
                bar.update(1)
                # A signal or the clock is one process's: with several, they agree at the
                # next logging boundary (the flag rides with the metrics); steps agree anyway.
                out_of_time = run.stop_after_minutes is not None and (
                    time.perf_counter() - wall_start > 60 * run.stop_after_minutes
                )
                request = signals.received if signals.received is not None else (0 if out_of_time else None)
                stopped = run.stop_after_steps is not None and steps_this_call >= run.stop_after_steps
                if log_now:
                    agreed = self._close_window(epoch, step, request)
                    if agreed is not None:  # another process's signal stops this one the same way
                        stopped, signals.received = True, signals.received or agreed or None
                    t = self.last_train
                    bar.set_postfix(loss=f"{t['loss']:.3f}", img_s=f"{t['images_per_s']:.0f}")
                elif single:
                    stopped = stopped or request is not None
                if stopped and not last:  # at an epoch's end, finish the epoch first
                    break
            bar.close()
            if stopped and loader.step < steps_per_epoch:
                self._save()
                break
            self.epoch_done = epoch + 1
            final = self.epoch_done == cfg.optim.epochs
            if final or self.epoch_done % run.knn_every_epochs == 0:
                self.evaluate(self.epoch_done)
            # A signal during the evaluation: one process stops at this epoch's checkpoint
            # (several agree at the next logging boundary, one step later).
            stopped = stopped or (single and signals.received is not None)
            if self.is_main:
                tqdm.write(self._epoch_line(epoch))
            if final or stopped or self.epoch_done % run.checkpoint_every_epochs == 0:
                self._save()
            if stopped:
                break
        finished = self.epoch_done == cfg.optim.epochs
        return self._summary(time.perf_counter() - wall_start, finished)

    def _epoch_line(self, epoch: int) -> str:
        """One line per epoch that stays on screen: loss, lr, images/s, kNN when evaluated."""
        t = self.last_train
        line = (f"epoch {epoch + 1}/{self.cfg.optim.epochs}: loss {t['loss']:.4f}, lr {t['lr']:.4g}, "
                f"{t['images_per_s']:.0f} images/s")
        latest = self.history[-1] if self.history else {}
        if latest.get("epoch") == epoch + 1:
            line += "".join(f", kNN {k[4:]} {v:.2f} %" for k, v in latest.items() if k.startswith("knn_"))
        return line

    def _summary(self, wall_seconds: float, finished: bool) -> dict[str, Any]:
        evals = [r for r in self.history if r["kind"] == "eval"]
        knn: dict[str, Any] = {}
        for name in self.parts.method.monitored_backbones():
            key = f"knn_{name}"
            scored = [(round(r[key], 2), r["epoch"]) for r in evals if key in r]
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
        train_seconds = self.train_seconds + self.window.seconds * (self.window.images > 0)
        last = self.last_train
        summary = {
            "method": p.recipe,
            "data": str(self.cfg.data),
            "finished": finished,
            "epochs_done": self.epoch_done,
            "stopped_at": None if finished else {"epoch": p.loader.epoch + 1, "step": p.loader.step},
            "knn": knn,
            "knn_test_images": test_count,
            # the probe's test accuracy at the last evaluation, and which epoch that was
            "online_probe_test": round(evals[-1]["probe_test"], 2) if evals else None,
            "online_probe_epoch": evals[-1]["epoch"] if evals else None,
            "final_loss": round(last["loss"], 4) if last else None,
            "collapse": collapse_verdict(last),
            "wall_time_s": round(train_seconds + sum(r["seconds"] for r in evals), 1),
            "this_call_wall_time_s": round(wall_seconds, 1),
            "train_time_s": round(train_seconds, 1),
            "images_per_s": round(self.images_seen / max(self.train_seconds, 1e-9), 1),
            "peak_memory_mib": round(memory, 1),
            "peak_memory_kind": memory_kind,
            "device": torch.cuda.get_device_name(p.device) if p.device.type == "cuda" else "cpu",
            "processes": p.accelerator.num_processes,
            "mixed_precision": p.accelerator.mixed_precision,
            "git_commit": _git_commit(),
            "torch": torch.__version__,
            "best_checkpoint": self.best,
            "resumes": self.resumes,
            "config": to_json(self.cfg),
            "relative_paths": relative_paths(self.cfg, self.run_dir),
            "data_meta_sha256": self.data_meta_sha256,
        }
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            with self._writing(self.run_dir / SUMMARY):
                checkpoint.write_atomic(self.run_dir / SUMMARY,
                                        lambda temporary: temporary.write_text(json.dumps(summary, indent=1)))
        return summary


# A batch of embeddings spanning fewer effective directions than this (RankMe's effective
# rank), or with a per-dimension spread below this (SimSiam's std of the unit embeddings,
# about 1/√d when they fill the sphere), has collapsed.
COLLAPSED_RANK, COLLAPSED_STD = 2.0, 1e-3


def collapse_verdict(window: dict[str, Any]) -> str | None:
    """"collapsed" or "ok" from the last window's collapse metrics (None when not logged)."""
    if "effective_rank" not in window:
        return None
    collapsed = window["effective_rank"] < COLLAPSED_RANK or window["embedding_std"] < COLLAPSED_STD
    return "collapsed" if collapsed else "ok"


@torch.no_grad()
def evaluate(parts: Parts, epoch: int) -> dict[str, Any]:
    """kNN accuracy of every monitored backbone, and the online probe's test accuracy: an
    ``eval`` record of ``metrics.jsonl``."""
    run, info, loader, method = parts.cfg.run, parts.info, parts.loader, parts.method
    method.eval()
    record: dict[str, Any] = {"kind": "eval", "epoch": epoch}
    start = time.perf_counter()
    shown = run.progress_bar and parts.accelerator.is_main_process

    def batches(split: str, what: str):  # the split's evaluation batches, with a progress bar
        shard = -(-info.splits[split]["count"] // parts.accelerator.num_processes)
        return tqdm(loader.eval_loader(split, run.eval_batch_size), total=-(-shard // run.eval_batch_size),
                    desc=what, disable=not shown, leave=False, unit="batch")

    with parts.accelerator.autocast():
        for name, network in method.monitored_backbones().items():
            bank, bank_labels = extract_features(
                network, batches(info.train_split, f"kNN bank ({name})"), info.splits[info.train_split]["count"],
            )
            test, test_labels = extract_features(
                network, batches(info.eval_split, f"kNN test ({name})"), info.splits[info.eval_split]["count"],
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
