"""What the self-supervised distillation methods share (seed 002: SEED, CompRess, DisCo,
SimReg, BINGO): a frozen teacher, loaded from disk, in the teacher slot.

A small network trained by contrastive learning alone falls far behind a large one; these
methods train it (the student, any fastssl backbone) to reproduce what a frozen
self-supervised teacher makes of the same images.

**The teacher** is read by ``fastssl.weights`` from a fastssl run (folder or checkpoint),
an export, or a plain torchvision/timm state dict (``--method.teacher-net.arch`` and the
options beside it build one; never downloaded). From a run it is the run's student
network with its projection head, so its *embedding* is the projection the run trained
(MoCo v2's 128-d output, as SEED, CompRess and DisCo distil it); from an export or a state
dict, which hold a backbone only, the embedding is the pooled features. A named
``teacher-net.arch`` that differs from the file's network is refused in one line.

The teacher is frozen (no gradients, outside the optimiser) and its BN layers stay in eval
mode, normalising with its running statistics — unlike the EMA teacher of MoCo and BYOL,
whose BN normalises its own batches. It runs under ``torch.no_grad`` inside the step's
autocast: bf16 on CUDA, fp32 on the CPU (not ``inference_mode``: its outputs are targets
saved for the student's backward, which inference tensors may not be). It sees the
student's views, made once on the device: where it was trained at another size or with
other normalisation statistics, the same crops are resized to its size (bilinear,
antialiased) and re-normalised with its own statistics.

Its weights stay in its file: the checkpoint holds the file's sha256 (``teacher.sha256``)
and the run's configuration its path, and a resumed run whose teacher file has changed is
refused.

**Caching**: a method declares whether its teacher may see the un-augmented image instead
of the student's view (``teacher_cacheable``; CompRess's ``--cache_teacher``), and only then
does ``--method.cache-teacher`` compute the teacher's outputs of the training images once
and look them up by index (``plain_image_outputs`` refuses the others: SEED, DisCo and
SimReg feed the teacher the augmented views, whose outputs differ at every step). BINGO
computes its bags of neighbours once from the un-augmented images and still feeds the
teacher the augmented views.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fastssl.eval.knn import extract_features
from fastssl.methods.base import Encoder, Method
from fastssl.weights import (
    CheckpointError,
    OutsideWeights,
    TrainedBackbone,
    load_backbone,
    read_checkpoint,
)
from pipelines.checksums import sha256 as file_sha256
from pipelines.loader import Loader
from pipelines.spec import ViewConfig


@dataclass(frozen=True)
class TeacherConfig:
    """The settings every distillation method has: where its teacher is and how to build it."""

    teacher: Path | None = None
    """A fastssl run folder or checkpoint, an export, or a plain state dict (with --method.teacher-net.arch)."""
    teacher_net: OutsideWeights = field(default_factory=OutsideWeights)
    """A plain state dict's network (arch, stem, size, statistics); a run's or an export's arch, checked."""
    cache_teacher: bool = False
    """The teacher's outputs of the un-augmented training images, computed once (where the method allows it)."""


@dataclass(frozen=True)
class TeacherOutput:
    features: Tensor  # pooled backbone features, N×D_T
    embedding: Tensor  # its final embedding: the projection where it has a head, else the features


class TeacherNetwork(nn.Module):
    """A teacher's backbone and, from a fastssl run, its projection head."""

    def __init__(self, backbone: nn.Module, projector: nn.Module | None) -> None:
        super().__init__()
        self.backbone, self.projector = backbone, projector

    def forward(self, images: Tensor) -> TeacherOutput:
        features = self.backbone(images)
        return TeacherOutput(features, features if self.projector is None else self.projector(features))


@dataclass(frozen=True)
class LoadedTeacher:
    network: TeacherNetwork
    views: ViewConfig  # the size and normalisation it was trained with
    source: Path  # the file its weights came from
    sha256: str
    description: str  # what it is, in words (the recipe that trained it, or the architecture)


class FrozenTeacher(nn.Module):
    """A loaded teacher, frozen, its BN in eval mode whatever ``train()`` is called with,
    fed the student's views converted to its own size and statistics."""

    network: TeacherNetwork
    sha256: Tensor  # 32 bytes, the checkpoint's record of the teacher file
    scale: Tensor  # 1×3×1×1: σ_S/σ_T
    shift: Tensor  # 1×3×1×1: (μ_S − μ_T)/σ_T

    def __init__(self, loaded: LoadedTeacher, student_view: ViewConfig) -> None:
        super().__init__()
        self.network = loaded.network.eval().requires_grad_(False)
        self.source, self.description = loaded.source, loaded.description
        self.register_buffer("sha256", torch.tensor(list(bytes.fromhex(loaded.sha256)), dtype=torch.uint8))
        self.size = None if loaded.views.size == student_view.size else loaded.views.size
        # x_T = (x_S·σ_S + μ_S − μ_T)/σ_T per channel: undo the student's normalisation, apply the teacher's.
        mean_s, std_s = torch.tensor(student_view.mean), torch.tensor(student_view.std)
        mean_t, std_t = torch.tensor(loaded.views.mean), torch.tensor(loaded.views.std)
        self.renormalise = not (torch.equal(mean_s, mean_t) and torch.equal(std_s, std_t))
        self.register_buffer("scale", (std_s / std_t).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("shift", ((mean_s - mean_t) / std_t).view(1, 3, 1, 1), persistent=False)
        self._loading_prefix: str | None = None
        self.register_load_state_dict_post_hook(self._weights_are_not_in_checkpoints)

    def train(self, mode: bool = True) -> FrozenTeacher:
        super().train(mode)
        self.network.eval()  # its running statistics, always
        return self

    def inputs(self, images: Tensor) -> Tensor:
        """The student's views as the teacher was trained to see them."""
        if self.size is not None:
            images = F.interpolate(images, size=(self.size, self.size), mode="bilinear", align_corners=False,
                                   antialias=True)
        return images * self.scale + self.shift if self.renormalise else images

    @torch.no_grad()
    def forward(self, images: Tensor) -> TeacherOutput:
        return self.network(self.inputs(images))

    def monitored(self) -> nn.Module:
        """The teacher's backbone behind its input conversion, for the kNN monitor."""
        return _Converted(self, self.network.backbone)

    def state_dict(self, *args: Any, destination: Any = None, prefix: str = "", keep_vars: bool = False) -> Any:
        """The teacher file's checksum only: its weights stay in the file (the run's config
        holds its path)."""
        if destination is None:
            destination = OrderedDict()
        destination[prefix + "sha256"] = self.sha256 if keep_vars else self.sha256.detach()
        return destination

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        stored = state_dict.get(prefix + "sha256")
        if stored is not None and not torch.equal(stored.cpu(), self.sha256.cpu()):
            raise CheckpointError(f"{self.source}: the teacher file changed since the run started (its sha256 is "
                                  f"{bytes(self.sha256.tolist()).hex()[:12]}…, the checkpoint's "
                                  f"{bytes(stored.tolist()).hex()[:12]}…)")
        self._loading_prefix = prefix
        super()._load_from_state_dict(state_dict, prefix, *args)

    def _weights_are_not_in_checkpoints(self, module: nn.Module, incompatible: Any) -> None:
        """The teacher's own weights are never in a checkpoint: not missing from one."""
        if self._loading_prefix is not None:
            inside = self._loading_prefix + "network."
            incompatible.missing_keys[:] = [k for k in incompatible.missing_keys if not k.startswith(inside)]
            self._loading_prefix = None


class _Converted(nn.Module):
    def __init__(self, teacher: FrozenTeacher, backbone: nn.Module) -> None:
        super().__init__()
        self.__dict__["teacher"] = teacher  # not a submodule: the teacher owns it
        self.backbone = backbone

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        return self.backbone(self.__dict__["teacher"].inputs(images))


def load_teacher(cfg: TeacherConfig, data: Path) -> LoadedTeacher:
    """The teacher ``cfg`` names; ``CheckpointError`` in one line naming the file for a
    missing, damaged or mismatched one (``data``: the training data, whose image side a plain
    state dict is built for unless ``teacher_net.image_size`` says otherwise)."""
    if cfg.teacher is None:
        raise CheckpointError("--method.teacher: a distillation recipe needs a teacher (a fastssl run, an export "
                              "or a state dict)")
    named = cfg.teacher_net.arch
    trained = load_backbone(cfg.teacher, cfg.teacher_net if _plain_state_dict(cfg.teacher) else OutsideWeights(),
                            data)
    if named is not None and trained.model.arch != named:
        raise CheckpointError(f"{trained.source}: the teacher is a {trained.model.arch}, not the "
                              f"--method.teacher-net.arch {named}")
    projector = _run_projector(trained) if trained.kind == "checkpoint" else None
    sha = file_sha256(trained.source)
    what = f"{trained.method} run {trained.name}" if trained.method else f"{trained.model.arch} ({trained.kind})"
    return LoadedTeacher(TeacherNetwork(trained.network, projector), trained.views, trained.source, sha, what)


def _plain_state_dict(path: Path) -> bool:
    """Whether ``path`` is neither a run folder, a checkpoint nor an export (whose networks
    are named by themselves)."""
    if path.is_dir():
        return False
    from fastssl.weights import CHECKPOINT_KEYS, is_export_weights, read_weights_file

    if is_export_weights(path):
        return False
    state = read_weights_file(path)
    return not (isinstance(state, dict) and CHECKPOINT_KEYS <= state.keys())


def _run_projector(trained: TrainedBackbone) -> nn.Module | None:
    """The projection head of the run ``trained`` comes from (its student's), rebuilt by the
    run's recipe and loaded strictly; None for a method without one."""
    from fastssl.config import from_json
    from fastssl.recipes import get

    recipe = get(str(trained.method))
    if issubclass(recipe.method, Distiller):
        raise CheckpointError(f"{trained.source}: a {trained.method} run (a distilled student) as the teacher: "
                              "export it and give the export")
    make: Any = recipe.method
    student: Encoder = make(from_json(recipe.config, trained.config["method"]), trained.network).student
    prefix = "student."
    weights = {k[len(prefix) :]: v for k, v in read_checkpoint(trained.source)["method"].items()
               if k.startswith(prefix)}
    try:
        student.load_state_dict(weights)
    except RuntimeError as error:
        raise CheckpointError(f"{trained.source}: its student does not fit its own recipe "
                              f"({str(error).splitlines()[1].strip()})") from None
    return student.projector.eval()


class Distiller(Method):
    """A method whose teacher is a frozen network loaded from disk, in the teacher slot.
    Built with the student's view (what the teacher converts from) and the training data."""

    teacher_cacheable: ClassVar[bool] = False  # whether its teacher may see the un-augmented images

    def __init__(self, cfg: TeacherConfig, student_view: ViewConfig, data: Path) -> None:
        super().__init__()
        # In the teacher slot, as an EMA teacher would be (its kNN is monitored as "teacher").
        # (Method.teacher is a read-only property for the EMA teachers: registered directly.)
        self._modules["teacher"] = FrozenTeacher(load_teacher(cfg, data), student_view)
        self.student_view, self.cache_teacher = student_view, cfg.cache_teacher
        self.cached: TeacherOutput | None = None
        size = student_view.size  # the widths of its outputs, from one pass over two noise images
        probe = self.frozen_teacher(torch.randn(2, 3, size, size))
        self.teacher_feature_dim, self.teacher_embedding_dim = probe.features.shape[1], probe.embedding.shape[1]

    @property
    def frozen_teacher(self) -> FrozenTeacher:
        return self._modules["teacher"]  # type: ignore[return-value]

    def prepare(self, loader: Loader) -> None:
        """With ``--method.cache-teacher``, the teacher's outputs of the un-augmented training
        images, computed once; a ``ValueError`` where the method's teacher must see the views."""
        if not self.cache_teacher:
            return
        if not type(self).teacher_cacheable:
            raise ValueError(f"--method.cache-teacher: {type(self).__name__}'s teacher sees the augmented views, so "
                             "its outputs differ at every step and cannot be computed once")
        self.cached = plain_image_outputs(self.frozen_teacher, loader)

    def teacher_outputs(self, images: Tensor, indices: Tensor) -> TeacherOutput:
        """The teacher's outputs for the views ``images`` (V views of the images ``indices``,
        view-major): computed, or with ``--method.cache-teacher`` its cached outputs of the
        un-augmented images, the same for every view."""
        if self.cached is None:
            return self.frozen_teacher(images)
        rows = indices.repeat(len(images) // len(indices))
        return TeacherOutput(self.cached.features[rows], self.cached.embedding[rows])

    def monitored_backbones(self) -> dict[str, Any]:
        """The student's backbone and the teacher's, the latter behind its input conversion."""
        return {"student": self.student.backbone, "teacher": self.frozen_teacher.monitored()}

    def compiled_networks(self) -> list[nn.Module]:
        return [self.student, self.frozen_teacher.network]


def plain_image_outputs(teacher: FrozenTeacher, loader: Loader) -> TeacherOutput:
    """The teacher's features and embeddings of every training image, un-augmented (the
    centred square of each, as the kNN monitor sees it), in index order; a ``ValueError`` for
    a training set of several splits."""
    split = loader.info.train_split
    count = loader.info.splits[split]["count"]
    if len(loader.train) != count or not torch.equal(loader.train.indices.cpu(), torch.arange(count)):
        raise ValueError(f"teacher outputs computed once need one training split ({split}), in index order")
    widths: list[int] = []

    def both(images: Tensor) -> Tensor:
        output = teacher(images)
        widths[:] = [output.features.shape[1], output.embedding.shape[1]]
        return torch.cat([output.features.float(), output.embedding.float()], dim=1)

    joined, _ = extract_features(both, loader.eval_loader(split, 256), count)
    features, embedding = joined.split(widths, dim=1)
    return TeacherOutput(features, embedding)
