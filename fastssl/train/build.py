"""A run's parts, built from its configuration: the accelerator (device, precision,
processes), the loader with its views, the method, the optimisers and the online probe.
Nothing here trains; ``fastssl.train.step`` takes one step with the parts, and
``fastssl.train.loop`` runs the epochs."""

from __future__ import annotations

import importlib.util
import os
import sys
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, ProjectConfiguration, set_seed
from torch import nn

from fastssl.config import TrainConfig
from fastssl.distributed import convert_sync_bn
from fastssl.eval.online import OnlineProbe
from fastssl.methods.base import Method
from fastssl.methods.distillation import Distiller
from fastssl.models.backbone import backbone_from_config
from fastssl.models.norm import split_bn_group_size
from fastssl.run_folder import run_dir_of
from fastssl.train.optim import build_optimizer
from pipelines.dataset import DatasetInfo, read_info
from pipelines.loader import Loader
from pipelines.verify import verify
from pipelines.views import ViewRecipe

if TYPE_CHECKING:
    from fastssl.recipes import Recipe


class RunError(Exception):
    """A run that cannot start or go on as asked (a bad path, a resume with nothing to
    resume, a setting the method refuses, a diverged loss)."""


@dataclass
class Parts:
    cfg: TrainConfig
    recipe: str  # the recipe's name
    accelerator: Accelerator
    info: DatasetInfo
    loader: Loader
    method: Method  # the student inside is called through its DDP wrapper
    optimizer: torch.optim.Optimizer
    probe: OnlineProbe
    probe_call: nn.Module  # the probe through its DDP wrapper
    probe_optimizer: torch.optim.Optimizer
    compile_mode: str | None  # torch.compile's mode for the networks; None when they run eagerly

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    @property
    def graphed(self) -> bool:
        """Whether the compiled networks are captured as CUDA graphs."""
        return self.compile_mode == "reduce-overhead"

    @property
    def steps_per_epoch(self) -> int:
        return len(self.loader)


def build(recipe: Recipe, cfg: TrainConfig) -> Parts:
    """The parts of a run of ``recipe`` with ``cfg``. Seeds every generator first, so the
    same configuration builds the same initial weights and views."""
    if not cfg.data.exists():
        raise RunError(f"--data {cfg.data}: no such directory")
    for tracker in cfg.run.trackers:
        if importlib.util.find_spec(tracker) is None:
            raise RunError(f"--run.trackers {tracker}: the {tracker} package is not installed (pip install {tracker})")
    info = read_info(cfg.data)
    verify(info, cfg.data_verify)
    if cfg.run.deterministic:
        _make_deterministic()
    cuda = torch.cuda.is_available()
    precision = {"auto": "bf16" if cuda else "no", "bf16": "bf16", "fp32": "no"}[cfg.run.precision]
    # No broadcast of rank 0's buffers before each of the student's forward passes: every
    # process's are equal already (synchronised BN layers compute the same statistics, and
    # Method.push_memories averages split-BN's per-process ones every step, which is exact).
    trackers = run_dir_of(cfg, recipe.name) / "trackers"  # where file-based trackers write
    accelerator = Accelerator(mixed_precision=precision, cpu=not cuda, log_with=list(cfg.run.trackers) or None,
                              project_config=ProjectConfiguration(project_dir=str(trackers.parent),
                                                                  logging_dir=str(trackers)),
                              kwargs_handlers=[DistributedDataParallelKwargs(broadcast_buffers=False)])
    warn_if_one_of_several(accelerator.num_processes)
    set_seed(cfg.run.seed)

    def switch(value: bool | None) -> bool:  # a speed switch: None means on with CUDA
        return cuda if value is None else value

    views = ViewRecipe(cfg.view_groups(), switch(cfg.run.fused_views),
                       torch.bfloat16 if precision == "bf16" else torch.float32)
    world = accelerator.num_processes
    loader = Loader(cfg.data, views, cfg.optim.batch_size, accelerator.device, cfg.run.seed,
                    accelerator.process_index, world, cfg.train_splits, cfg.eval_size, cfg.upsampled_views)
    m, o = cfg.model, cfg.optim
    group_size = split_bn_group_size(m.bn_splits, o.batch_size, world) if m.norm == "split_bn" else 1
    backbone = backbone_from_config(m, views.first.size, group_size)
    if m.norm == "sync_bn":
        backbone = convert_sync_bn(backbone)  # type: ignore[assignment]
    memory_format = torch.channels_last if cfg.run.channels_last else torch.contiguous_format
    make: Any = recipe.method
    # A distiller: its teacher converts the student's views and may need the data.
    if isinstance(make, type) and issubclass(make, Distiller):
        distiller: Any = make  # (narrowed to Distiller, whose subclasses take the backbone too)
        method: Method = distiller(cfg.method, backbone, views.first, cfg.data)
    else:
        method = make(cfg.method, backbone)
    # With several processes every plain BN layer (heads, the teacher's copies, a `bn`
    # backbone) sees the whole global batch, as in one process: SyncBatchNorm, in place.
    # Split-BN layers stay per process (their fixed-size groups are one process's either way).
    convert_sync_bn(method)
    if not m.joint_views:
        method.call_per_view(o.batch_size // world)
    method = method.to(accelerator.device).to(memory_format=memory_format)
    with accelerator.autocast():
        method.prepare(loader)
    if o.accumulate_steps > 1 and not method.accumulation_safe:
        raise RunError(
            f"--optim.accumulate-steps {o.accumulate_steps}: {recipe.name}'s loss depends on the whole "
            "batch (in-batch negatives, BN statistics or a queue), so accumulating gradients over "
            "smaller batches would train a different method; use more processes or a smaller --optim.batch-size"
        )
    method.bind_student(_prepare(accelerator, method.student))
    probe = OnlineProbe(backbone.feature_dim, info.num_classes).to(accelerator.device)
    probe_call = _prepare(accelerator, probe)
    optimizer = build_optimizer(method.param_groups(o), o, fused=switch(cfg.run.fused_optimizer))
    compile_mode = None
    if switch(cfg.run.compile):
        compile_mode = "reduce-overhead" if switch(cfg.run.cuda_graphs) else "default"
        # In place (nn.Module.compile), so state-dict keys and checkpoints are unchanged.
        for network in method.compiled_networks():
            network.compile(mode=compile_mode)
    probe_optimizer = torch.optim.SGD(probe.parameters(), lr=o.probe_lr, momentum=0.9, weight_decay=0.0)
    return Parts(cfg, recipe.name, accelerator, info, loader, method, optimizer, probe, probe_call,
                 probe_optimizer, compile_mode)


def _prepare(accelerator: Accelerator, module: nn.Module) -> nn.Module:
    """``module`` through DDP when there are several processes (itself otherwise)."""
    with warnings.catch_warnings():
        # torch 2.14 renames broadcast_buffers forward_sync_buffers, which accelerate cannot pass
        # yet; False also skips DDP's initial buffer broadcast, where every process's are equal.
        warnings.filterwarnings("ignore", "`broadcast_buffers` is deprecated", FutureWarning)
        return accelerator.prepare_model(module)


def warn_if_one_of_several(processes: int) -> None:
    """One line on stderr when a launcher meant several processes but this is the only one:
    ``MASTER_ADDR``/``MASTER_PORT`` set without ``WORLD_SIZE`` is what accelerate's simple
    launcher leaves (``accelerate launch --cpu --num_processes 2`` starts one process)."""
    env = os.environ
    if processes == 1 and "MASTER_ADDR" in env and "MASTER_PORT" in env and "WORLD_SIZE" not in env:
        print("fastssl: warning: launched for several processes but running in one (MASTER_ADDR/MASTER_PORT "
              "without WORLD_SIZE: accelerate's simple launcher); for several CPU processes run "
              "ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 …", file=sys.stderr, flush=True)


def _make_deterministic() -> None:
    """Deterministic kernels (slower; errors where an op has no deterministic version)."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
