"""What every method shares: its output, the training progress it is told, the hooks the
loop calls, and the EMA teacher slot. Methods stay small; nothing here decides device,
precision or process count."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, cast

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from fastssl.config import OptimConfig
from fastssl.distributed import average_running_stats, gather, rank, world_size
from fastssl.methods.memory import FeatureQueue
from fastssl.models.backbone import Backbone
from fastssl.models.heads import Prototypes
from fastssl.train.optim import decay_groups
from fastssl.train.schedule import cosine_ramp
from pipelines.batch import ViewBatch

if TYPE_CHECKING:
    from pipelines.loader import Loader


@dataclass(kw_only=True)
class MethodOutput:
    loss: Tensor
    metrics: dict[str, Tensor] = field(default_factory=dict)  # device scalars, read at log time
    features: Tensor | None = None  # detached backbone features of the views (online probe)
    embedding: Tensor | None = None  # detached projections of one view (collapse diagnostics)
    # Embeddings for the method's memories, pushed after the optimiser step (so both loss
    # directions of a step saw the memories as they were before it): the name of a
    # ``FeatureQueue`` submodule → this process's N×d embeddings.
    enqueue: dict[str, Tensor] = field(default_factory=dict)


@dataclass(frozen=True)
class Progress:
    epoch: int
    step: int  # within the epoch
    steps_per_epoch: int
    epochs: int

    @property
    def global_step(self) -> int:
        return self.epoch * self.steps_per_epoch + self.step

    @property
    def fraction(self) -> float:
        """Share of training done, in [0, 1)."""
        return self.global_step / (self.epochs * self.steps_per_epoch)


@dataclass(frozen=True, kw_only=True)
class Encoded:
    features: Tensor  # pooled backbone features, N×D
    projection: Tensor  # the projection head's output
    prediction: Tensor | None = None  # the predictor's output (BYOL, SimSiam, …), if any
    feature_map: Tensor | None = None  # a feature map N×D×h×w, when asked (VICRegL: its cells' local embeddings)

    @property
    def predicted(self) -> Tensor:
        """The predictor's output, for an encoder that has one."""
        assert self.prediction is not None, "this encoder has no predictor"
        return self.prediction


class Encoder(nn.Module):
    """Backbone, projection head and optional predictor: the trainable network the loop
    wraps in DDP, so everything that learns must sit inside it (a method with more heads
    subclasses it and overrides ``encode_together``). ``with_map`` also returns the
    backbone's last feature map.

    With ``view_size`` set (``Method.call_per_view``), a call on several views stacked
    view-major runs the network once per view of ``view_size`` images, as Mini-SSL and
    solo-learn call it: each view's BN layers (backbone and heads) normalise over that
    view alone and move their running statistics once per view. ``None``: one call over
    everything given (``--model.joint-views``), where the heads' BN pools the views."""

    backbone: Backbone
    projector: nn.Module
    predictor: nn.Module | None
    view_size: int | None = None

    def __init__(self, backbone: Backbone, projector: nn.Module, predictor: nn.Module | None = None) -> None:
        super().__init__()
        self.backbone, self.projector, self.predictor = backbone, projector, predictor

    def forward(self, images: Tensor, with_map: bool = False) -> Encoded:
        if self.view_size is None or len(images) <= self.view_size:
            return self.encode_together(images, with_map)
        if len(images) % self.view_size:
            raise ValueError(f"a call on {len(images)} images does not split into views of {self.view_size}")
        parts = [self.encode_together(view, with_map) for view in images.split(self.view_size)]

        def joined(name: str) -> Tensor | None:
            return None if getattr(parts[0], name) is None else torch.cat([getattr(p, name) for p in parts])

        return Encoded(features=torch.cat([p.features for p in parts]),
                       projection=torch.cat([p.projection for p in parts]),
                       prediction=joined("prediction"), feature_map=joined("feature_map"))

    def encode_together(self, images: Tensor, with_map: bool = False) -> Encoded:
        """One network call over every image in ``images``."""
        feature_map = None
        if with_map:
            features, feature_map = self.backbone.forward_with_map(images)
        else:
            features = self.backbone(images)
        projection = self.projector(features)
        prediction = None if self.predictor is None else self.predictor(projection)
        return Encoded(features=features, projection=projection, prediction=prediction, feature_map=feature_map)


class PrototypeEncoder(Encoder):
    """Backbone and projection head, the projection L2-normalised and scored against the
    prototypes: ``projection`` is the unit z, ``prediction`` its K scores."""

    prototypes: Prototypes

    def __init__(self, backbone: Backbone, projector: nn.Module, prototypes: Prototypes) -> None:
        super().__init__(backbone, projector)
        self.prototypes = prototypes

    def encode_together(self, images: Tensor, with_map: bool = False) -> Encoded:
        encoded = super().encode_together(images, with_map)
        z = F.normalize(encoded.projection, dim=1)
        return Encoded(features=encoded.features, projection=z, prediction=self.prototypes(z),
                       feature_map=encoded.feature_map)


class EMATeacher(nn.Module):
    """A frozen copy of a network, moved towards it by an exponential moving average.

    It lives outside the optimiser (no parameter requires grad) and outside DDP (only the
    student is wrapped). It runs without autograd but keeps its BN layers in training
    mode, as MoCo's key encoder does; its BN buffers track its own batches. The momentum
    is a device tensor (``set_momentum`` each step for a schedule), so a compiled or
    graph-captured update never sees a new constant.
    """

    network: Encoder  # the copy of the student
    momentum: Tensor  # a buffer

    def __init__(self, student: Encoder, momentum: float, without: tuple[str, ...] = ()) -> None:
        """``without``: submodules of the student the teacher does not copy (BYOL's target
        has no predictor); they are set to None in the copy."""
        super().__init__()
        self.network = copy.deepcopy(student)
        for name in without:
            setattr(self.network, name, None)
        self.network.requires_grad_(False)
        # In float64, so m is the recipe's exactly: in fp32 0.99 is 0.99000000954, 1 − m off by 1e-6 of itself.
        self.register_buffer("momentum", torch.tensor(float(momentum), dtype=torch.float64))

    def set_momentum(self, momentum: float) -> None:
        self.momentum.fill_(momentum)  # an asynchronous device write, no synchronisation

    def follow(self, student: nn.Module, start: float, final: float, progress: Progress) -> None:
        """One EMA update with the momentum of ``progress`` on a half cosine from ``start``
        to ``final`` (BYOL §3.3: τ = 1 − (1 − τ_base)·(cos(πk/K) + 1)/2)."""
        self.set_momentum(cosine_ramp(start, final, progress.fraction))
        self.update(student)

    @torch.no_grad()
    def update(self, student: nn.Module) -> None:
        """θ_teacher ← m·θ_teacher + (1 − m)·θ_student, parameters only, matched by name."""
        student_params = dict(student.named_parameters())
        names = [name for name, _ in self.network.named_parameters()]
        teacher_params: list[Tensor] = list(self.network.parameters())
        # θ_t += (1 − m)·(θ_s − θ_t) with foreach ops whose Tensor overloads read m on the
        # device: _foreach_lerp_ would take the 0-dim m for a Scalar and read it on the host.
        delta = torch._foreach_sub([student_params[n].detach() for n in names], teacher_params)
        torch._foreach_mul_(delta, 1.0 - self.momentum)
        torch._foreach_add_(teacher_params, delta)

    @torch.no_grad()
    def forward(self, images: Tensor, *args, **kwargs):
        return self.network(images, *args, **kwargs)

    @torch.no_grad()
    def projections(self, images: Tensor, views: int, shuffle_bn: bool = True) -> Tensor:
        """The projections of ``images`` (``views`` views stacked view-major); with
        ``shuffle_bn`` the images are shuffled within each view first, so the teacher's BN
        groups hold a different mix of images than the student's (MoCo's shuffling BN,
        He et al. 2020, §3.3), and put back in order after.

        The shuffle is of each view of the *global* batch, drawn from the device's global
        generator (``set_seed`` seeds every process alike, and every process draws the
        same numbers, so their generators stay in step): one process draws and runs
        exactly what it always has; several run what one process holding the whole batch
        would (``_shuffled_across_processes``)."""
        if not shuffle_bn:
            return self(images).projection
        world, n = world_size(), images.shape[0] // views
        total = n * world  # images per view in the global batch
        order = torch.argsort(torch.rand(views, total, device=images.device), dim=1)
        order = (order + total * torch.arange(views, device=images.device)[:, None]).flatten()
        if world > 1:
            return self._shuffled_across_processes(images, views, order)
        shuffled = self(images[order]).projection
        return torch.empty_like(shuffled).index_copy_(0, order, shuffled)

    def _shuffled_across_processes(self, images: Tensor, views: int, order: Tensor) -> Tensor:
        """MoCo's ``batch_shuffle_ddp``/``batch_unshuffle_ddp`` for the global shuffle
        ``order`` (positions into the global batch, view-major: the k-th shuffled image of
        view v is global image ``order[v·total + k]``). Every process gathers every
        process's images, takes its share of each view of the shuffled global batch
        (shuffled positions rank·n … rank·n + n − 1, so its split-BN groups are the ones a
        single process would form there), runs the teacher on them, gathers the
        projections back and keeps those of its own images. Rank 0's order is broadcast,
        so the processes shuffle alike even if their generators ever parted."""
        world, me = world_size(), rank()
        n = images.shape[0] // views
        total = n * world
        dist.broadcast(order, src=0)
        memory_format = (torch.channels_last if images.dim() == 4 and not images.is_contiguous()
                         and images.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format)
        everyone = gather(images)  # rank-major: rank r's rows are its V views of n images
        # Global image v·total + r·n + i sits at row r·V·n + v·n + i of the gathered batch.
        view, column = order // total, order % total
        row_of = (column // n) * views * n + view * n + column % n
        shares = order.view(views, world, n).transpose(0, 1)  # [r, v, i]: what process r runs
        mine = row_of.view(views, world, n)[:, me].flatten()
        shuffled = self(everyone[mine].contiguous(memory_format=memory_format)).projection
        # Every process's projections, by the global position of the image each is of.
        projections = torch.empty(views * total, shuffled.shape[1], dtype=shuffled.dtype, device=shuffled.device)
        projections.index_copy_(0, shares.flatten(), gather(shuffled))
        return projections.view(views, total, -1)[:, me * n : (me + 1) * n].flatten(0, 1)


class Method(nn.Module):
    """Base of the methods: a student ``Encoder`` (wrapped by the loop for DDP), an optional
    teacher, and the hooks. Subclasses implement ``forward`` and the hooks they need."""

    student: Encoder
    # Whether gradients may be accumulated over micro-batches: only for a loss that is a sum
    # of per-image terms with no batch statistics. In-batch negatives, BN in the heads and
    # queues all make a micro-batch train a different method, so no current method allows it.
    accumulation_safe: ClassVar[bool] = False

    @property
    def teacher(self) -> EMATeacher | None:
        """The EMA teacher, for the methods that make one (``self.teacher = EMATeacher(…)``
        registers it as a submodule); None for the others."""
        return cast("EMATeacher | None", self._modules.get("teacher"))

    def bind_student(self, wrapped: nn.Module) -> None:
        """Call the student through ``wrapped`` (a DDP wrapper), keeping state-dict keys."""
        self.__dict__["_student_call"] = wrapped

    def call_per_view(self, view_size: int) -> None:
        """Run each network (student, teacher) that has BN layers once per view of
        ``view_size`` images (``Encoder.view_size``); networks without BN (ViTs, whose
        norms are per sample) compute the same either way and keep one call."""
        for module in self.modules():
            if isinstance(module, Encoder) and any(isinstance(m, nn.modules.batchnorm._BatchNorm)
                                                   for m in module.modules()):
                module.view_size = view_size

    def encode(self, images: Tensor, *args, **kwargs) -> Encoded:
        """The student on ``images``, through its DDP wrapper when there is one."""
        return self.__dict__.get("_student_call", self.student)(images, *args, **kwargs)

    def forward(self, batch: ViewBatch) -> MethodOutput:
        raise NotImplementedError

    def prepare(self, loader: Loader) -> None:
        """Work done once before training (and again on resuming), with the training data at
        hand: BINGO's bags of neighbours. Nothing for most methods."""

    def before_step(self, progress: Progress) -> None:
        """Schedules and updates that must precede the forward pass."""

    def after_backward(self) -> None:
        """Gradient edits (freezes by zeroing) before the optimiser step."""

    def after_optimizer_step(self, progress: Progress) -> None:
        """EMA updates and schedules that follow the optimiser step."""

    def push_memories(self, output: MethodOutput) -> None:
        """Push ``output.enqueue`` into the memories it names, every process's embeddings
        (the loop calls it after the optimiser step, before ``after_optimizer_step``).

        With several processes this also averages the running statistics of the BN layers
        that stay per process (split-BN, student's and teacher's) over the processes, in
        one all-reduce: averaged every step, they are the single-process statistics on
        every process whenever they are read (evaluation, checkpoints;
        ``distributed.average_running_stats``). One process: nothing more happens."""
        for name, embeddings in output.enqueue.items():
            cast(FeatureQueue, self.get_submodule(name)).push(embeddings)
        average_running_stats(self)

    def encode_multi_crop(self, batch: ViewBatch) -> tuple[Encoded, Tensor]:
        """A ``PrototypeEncoder`` student on the global views and, when the batch has them,
        the local crops (one backbone call per resolution): the global views' encoding, and
        every view's prototype scores as V×N×K, the two global views first."""
        global_views = self.encode(batch.views["global"])
        scores = [global_views.predicted]
        if "local" in batch.views:
            scores.append(self.encode(batch.views["local"]).predicted)
        return global_views, torch.cat(scores).view(-1, batch.batch_size, scores[0].shape[-1])

    def param_groups(self, cfg: OptimConfig) -> list[dict]:
        """Optimiser groups of the student: by default one group decayed as ``cfg`` says
        (with LARS, biases and norms split off). A group flagged ``fixed_lr`` keeps the
        peak lr throughout (SimSiam's predictor)."""
        return decay_groups(self.student.parameters(), cfg)

    def compiled_networks(self) -> list[nn.Module]:
        """The networks worth ``torch.compile``: the student's and the teacher's (their
        forward passes are nearly all of a step's time)."""
        return [self.student, *([self.teacher.network] if self.teacher is not None else [])]

    @property
    def backbone(self) -> Backbone:
        return self.student.backbone

    def monitored_backbones(self) -> dict[str, Backbone]:
        """The networks the kNN monitor evaluates: the student's and any teacher's."""
        nets = {"student": self.student.backbone}
        if self.teacher is not None:
            nets["teacher"] = self.teacher.network.backbone
        return nets
