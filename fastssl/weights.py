"""A backbone to evaluate, wherever its weights come from, rebuilt in eval mode.

Three sources, told apart by what the path holds:

- a fastssl checkpoint (``runs/<name>/checkpoint.pt``) or the run folder holding one: the
  student backbone (``method``'s entries under ``student.backbone.``), built from the run's
  own configuration (``config``);
- a fastssl export (``backbone.pt`` with ``model_card.json`` beside it, or the folder of
  the two): built from the card's ``config.model`` and ``preprocessing``, once the weights'
  sha256 matches the card's;
- a plain state dict on disk (never downloaded) of a torchvision ResNet-18/34/50 (``fc.*``
  dropped), MobileNet-V2, MobileNet-V3-small or EfficientNet-B0 (``classifier.*`` dropped)
  or a timm ViT-Tiny/Small (``head.*`` dropped), perhaps under DDP's ``module.``
  prefix or wrapped as ``{"state_dict": …}`` / ``{"model": …}``: built as
  ``OutsideWeights`` names it, since such a file does not say what it is.

Every load is strict: weights that do not fit the network are one line naming the file,
the network and the first missing or unexpected key or mismatched shape. A checkpoint or an
export also says where its data set is, absolute and relative to its folder
(``TrainedBackbone.data_set`` tries both). Tools evaluate outside weights by the same
protocol as fastssl's own through here, and fixed distillation teachers load the same way.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import torch
from torch import Tensor, nn

from fastssl.config import ModelConfig, from_json
from fastssl.models.backbone import backbone_from_config
from fastssl.models.vit import ViT
from fastssl.run_folder import CHECKPOINT, RunFolderError, checkpoint_in, locate
from fastssl.train.checkpoint import DamagedCheckpoint, verify
from pipelines.dataset import read_info
from pipelines.spec import IMAGENET_MEAN, IMAGENET_STD, ViewConfig

# The prefix of each network's backbone parameters in a checkpoint's "method"
BACKBONES = {"student": "student.backbone.", "teacher": "teacher.network.backbone."}
Network = Literal["student", "teacher"]
WEIGHTS_FILE, CARD_FILE = "backbone.pt", "model_card.json"  # an export's two files
CHECKPOINT_KEYS = {"method_name", "method", "config"}
ANY_WEIGHTS = "fastssl checkpoint, export or state dict"
Architecture = Literal["resnet18", "resnet34", "resnet50", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0",
                       "vit_tiny", "vit_small"]


class CheckpointError(Exception):
    """A path whose weights cannot be loaded: no fastssl checkpoint, export or state dict
    that fits the network it names."""


@dataclass(frozen=True)
class OutsideWeights:
    """The network of a plain state dict (torchvision or timm weights), which the file does not
    name; fastssl checkpoints and exports name their own."""

    arch: Architecture | None = None  # the architecture of a plain state dict (required for one)
    cifar_stem: bool = False
    """fastssl's CIFAR stem (ResNet: a 3×3 stride-1 conv1; MobileNets, EfficientNet: the strides of
    fastssl.models.torchvision_nets); else torchvision's (ResNet: a 7×7 conv1 at stride 2)."""
    maxpool: bool = True  # ResNet: the stem's max-pool (torchvision keeps it; fastssl's CIFAR runs drop it)
    width: int = 64  # ResNet: channels of the first stage (64 in torchvision)
    patch_size: int = 16  # ViT: patch side in pixels (timm's vit_*_patch16_*: 16)
    image_size: int | None = None  # evaluation size in pixels; default: the data set's (shorter) image side
    mean: tuple[float, float, float] = IMAGENET_MEAN  # per-channel mean the weights were trained with (ImageNet's)
    std: tuple[float, float, float] = IMAGENET_STD  # per-channel standard deviation (ImageNet's)


@dataclass
class TrainedBackbone:
    network: nn.Module  # in eval mode, BN with the running statistics
    model: ModelConfig  # its architecture (norm "bn")
    views: ViewConfig  # evaluation takes their size and normalisation
    source: Path  # the file the weights were read from
    folder: Path  # the run folder, or the folder of the export or state dict: results go here
    name: str  # the run's name (a state dict's file name)
    kind: Literal["checkpoint", "export", "state dict"]
    config: dict[str, Any]  # the run's TrainConfig as JSON ({} for a plain state dict)
    epochs_done: int | None  # None: unknown (a plain state dict)
    method: str | None  # the recipe that trained it; None: unknown
    data: str | None = None  # the data set it trained on, its absolute path as stored
    data_relative: str | None = None  # the same relative to ``folder``, where stored
    role: Network = "student"  # which network of the run it is (a checkpoint holds both where there is a teacher)

    def data_set(self) -> Path:
        """The data set it trained on: the stored absolute path where it exists, else the
        relative one (a run folder or an export moved with its data set); a
        ``RunFolderError`` naming both when neither exists."""
        if self.data is None:
            raise CheckpointError(f"{self.source}: a plain state dict names no data set: give --data")
        return locate(self.data, self.data_relative, self.folder)


def read_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint's contents, loaded as plain tensors and containers (``weights_only``:
    no code runs from the file)."""
    try:
        verify(path)
    except DamagedCheckpoint as error:
        raise CheckpointError(str(error)) from error
    state = read_weights_file(path, "fastssl checkpoint")
    if not isinstance(state, dict) or not CHECKPOINT_KEYS <= state.keys():
        raise CheckpointError(f"{path}: not a fastssl checkpoint (no 'method_name', 'method' and 'config')")
    return state


def read_weights_file(path: Path, what: str = ANY_WEIGHTS, data: bytes | None = None) -> Any:
    """What ``torch.load`` makes of the file (or of its bytes, ``data``) with ``weights_only``:
    no code runs from it; ``what`` names what it should have been."""
    if data is None and not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        return torch.load(path if data is None else io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as error:  # torch.load raises many kinds on foreign or truncated files
        raise CheckpointError(f"{path}: not a {what} ({type(error).__name__})") from error


def load_backbone(path: Path, outside: OutsideWeights = OutsideWeights(), data: Path | None = None) -> TrainedBackbone:
    """The backbone of a run folder, checkpoint, export (folder or weights file) or plain
    state dict; ``outside`` builds a plain state dict's network, whose ``image_size`` defaults
    to the image side of ``data`` (required for one)."""
    if path.is_dir():
        if (path / CARD_FILE).is_file():
            return load_export(path)
        if not any(path.glob("checkpoint*.pt")):
            raise CheckpointError(f"{path}: a folder with neither a {CHECKPOINT} (a run folder) nor a {CARD_FILE} "
                                  "(an export)")
        try:
            path = checkpoint_in(path)  # the newest intact one
        except RunFolderError as error:
            raise CheckpointError(str(error)) from error
    if is_export_weights(path):
        refuse_outside_options(outside, path, "export")
        return load_export(path)
    state = read_weights_file(path)
    if isinstance(state, dict) and CHECKPOINT_KEYS <= state.keys():
        refuse_outside_options(outside, path, "checkpoint")
        return checkpoint_backbone(state, path)
    return state_dict_backbone(unwrap_state_dict(state, path), path, outside, data)


def refuse_outside_options(outside: OutsideWeights, path: Path, kind: str) -> None:
    """A run or an export is built as it was trained: options that would build it otherwise are a mistake."""
    if outside != OutsideWeights():
        raise CheckpointError(f"{path}: a fastssl {kind}, built as it was trained: --arch and the options that go "
                              "with it are for plain state dicts")


def load_checkpoint(path: Path, network: Network = "student") -> TrainedBackbone:
    """The student's (or the EMA teacher's) backbone of a run folder or a checkpoint
    (``RunFolderError`` for a folder without one)."""
    path = checkpoint_in(path)
    return checkpoint_backbone(read_checkpoint(path), path, network)


def checkpoint_backbone(state: dict[str, Any], path: Path, role: Network = "student") -> TrainedBackbone:
    """The run's student (or EMA teacher) backbone, rebuilt from its configuration.
    Split-BN and sync-BN are built as plain BN: in eval mode all three are the same function
    of the same parameters and running statistics."""
    prefix = BACKBONES[role]
    weights = {k[len(prefix) :]: v for k, v in state["method"].items() if k.startswith(prefix)}
    if not weights:
        method = state.get("method_name")
        raise CheckpointError(f"{path}: holds no {role} backbone ({prefix}*; a {method} run)")
    config = state["config"]
    try:
        model = dataclasses.replace(from_json(ModelConfig, config["model"]), norm="bn")
        views = from_json(ViewConfig, config["views"])
        network = backbone_from_config(model, views.size, 1)
        if config.get("eval_size"):  # evaluated as the run evaluated it
            views = dataclasses.replace(views, size=int(config["eval_size"]))
        data = str(config["data"])
    except (KeyError, TypeError, AttributeError, ValueError) as error:
        raise CheckpointError(f"{path}: unreadable run configuration ({error})") from error
    load_strictly(network, weights, path, model, views.size)
    return TrainedBackbone(
        network.eval(), model, views, source=path, folder=path.parent, name=path.parent.name, kind="checkpoint",
        config=config, epochs_done=state.get("epoch_done", 0), method=state["method_name"],
        data=data, data_relative=(state.get("relative_paths") or {}).get("data"), role=role,
    )


def read_card(folder: Path) -> dict[str, Any]:
    path = folder / CARD_FILE
    try:
        card = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path}: unreadable model card ({error})") from error
    if not isinstance(card, dict) or not isinstance(card.get("weights"), dict):
        raise CheckpointError(f"{path}: not a fastssl model card (no 'weights')")
    return card


def is_export_weights(path: Path) -> bool:
    """Whether ``path`` is the weights file a ``model_card.json`` beside it describes."""
    if not (path.parent / CARD_FILE).is_file():
        return False
    return read_card(path.parent)["weights"].get("file") == path.name


def load_export(path: Path) -> TrainedBackbone:
    """The backbone of an export (its folder, or the weights file the card beside it names),
    built as its model card says, once the file's sha256 is the card's."""
    folder = path if path.is_dir() else path.parent
    card = read_card(folder)
    weights_path = folder / str(card["weights"].get("file", WEIGHTS_FILE))
    if not weights_path.is_file():
        raise CheckpointError(f"{weights_path}: no such file (named by {folder / CARD_FILE})")
    data = weights_path.read_bytes()
    sha256 = hashlib.sha256(data).hexdigest()
    if sha256 != card["weights"].get("sha256"):
        raise CheckpointError(f"{weights_path}: its sha256 {sha256[:12]}… is not the {CARD_FILE}'s "
                              f"{str(card['weights'].get('sha256'))[:12]}… (changed since the export)")
    try:
        model = dataclasses.replace(from_json(ModelConfig, card["config"]["model"]), norm="bn")
        preprocessing = card["preprocessing"]
        views = from_json(ViewConfig, {name: preprocessing[name] for name in ("size", "mean", "std")})
        network = backbone_from_config(model, views.size, 1)
        data_set = card.get("data_set") or {}
    except (KeyError, TypeError, AttributeError, ValueError) as error:
        raise CheckpointError(f"{folder / CARD_FILE}: unreadable model card ({error})") from error
    weights = weights_dict(read_weights_file(weights_path, data=data), weights_path)
    load_strictly(outside_names(network), weights, weights_path, model, views.size)
    return TrainedBackbone(
        network.eval(), model, views, source=weights_path, folder=folder, name=card.get("name", folder.name),
        kind="export", config=card["config"], epochs_done=(card.get("training") or {}).get("epochs_done"),
        method=card.get("method"), data=data_set.get("path"), data_relative=data_set.get("relative_path"),
    )


def weights_dict(state: Any, path: Path) -> dict[str, Tensor]:
    """``state`` when it is a non-empty mapping of names to tensors."""
    if not isinstance(state, dict) or not state or not all(isinstance(v, Tensor) for v in state.values()):
        found = type(state).__name__ if not isinstance(state, dict) else "a dict that is not names → tensors"
        raise CheckpointError(f"{path}: not a {ANY_WEIGHTS} ({found})")
    return state


def unwrap_state_dict(state: Any, path: Path) -> dict[str, Tensor]:
    """The state dict in a file as torchvision or timm save it, or as training scripts wrap
    it (``{"state_dict": …}``, ``{"model": …}``), without DDP's ``module.`` prefix."""
    for wrapper in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
            break
    weights = weights_dict(state, path)
    if all(name.startswith("module.") for name in weights):
        weights = {name[len("module.") :]: value for name, value in weights.items()}
    return weights


def state_dict_backbone(
    weights: dict[str, Tensor], path: Path, outside: OutsideWeights, data: Path | None
) -> TrainedBackbone:
    """A plain state dict's backbone, built as ``outside`` names it, its classifier dropped."""
    if outside.arch is None:
        raise CheckpointError(f"{path}: a plain state dict (no fastssl checkpoint or export): name its architecture "
                              f"with --arch {'|'.join(get_args(Architecture))}")
    if data is None:
        raise CheckpointError(f"{path}: a plain state dict names no data set: give --data")
    image_size = outside.image_size or min(read_info(data).image_size)
    model = ModelConfig(arch=outside.arch, patch_size=outside.patch_size, cifar_stem=outside.cifar_stem,
                        maxpool=outside.maxpool, width=outside.width, norm="bn")
    views = ViewConfig(size=image_size, mean=outside.mean, std=outside.std)
    try:
        network = backbone_from_config(model, image_size, 1)
    except ValueError as error:  # an option the architecture does not take
        raise CheckpointError(f"{path}: {error}") from error
    backbone = {name: value for name, value in weights.items() if not name.startswith(classifier_prefix(outside.arch))}
    load_strictly(outside_names(network), backbone, path, model, image_size)
    return TrainedBackbone(network.eval(), model, views, source=path, folder=path.parent, name=path.name,
                           kind="state dict", config={}, epochs_done=None, method=None)


def classifier_prefix(arch: str) -> str:
    """The names of the classifier a plain state dict of ``arch`` holds beside its backbone."""
    if arch.startswith("vit"):
        return "head."  # timm
    return "fc." if arch.startswith("resnet") else "classifier."  # torchvision


def describe(model: ModelConfig, image_size: int) -> str:
    """The network in words, with what its parameters' shapes depend on."""
    if model.arch.startswith("vit"):
        return f"{model.arch} (patch {model.patch_size}, {image_size} px)"
    stem = "CIFAR stem" if model.cifar_stem else "ImageNet stem"
    if model.arch.startswith("resnet"):
        return f"{model.arch} ({stem}, width {model.width})"
    return f"{model.arch} ({stem}, torchvision's widths)"


def first_mismatch(expected: Mapping[str, Tensor], given: Mapping[str, Tensor]) -> str | None:
    """The first difference between two state dicts' names or shapes, in words; None when
    they fit."""
    missing = [name for name in expected if name not in given]
    unexpected = [name for name in given if name not in expected]
    for kind, names in (("missing", missing), ("unexpected", unexpected)):
        if names:
            return f"{kind} {names[0]}" + (f" and {len(names) - 1} more" if len(names) > 1 else "")
    for name, tensor in expected.items():
        if given[name].shape != tensor.shape:
            return f"{name} is {tuple(given[name].shape)} in the file, {tuple(tensor.shape)} in the network"
    return None


def outside_names(network: nn.Module) -> nn.Module:
    """The module whose state dict has torchvision's or timm's names: a ResNet itself, a
    ViT's timm model."""
    return network.net if isinstance(network, ViT) else network


def load_strictly(
    network: nn.Module, weights: Mapping[str, Tensor], path: Path, model: ModelConfig, image_size: int
) -> None:
    """``weights`` into ``network``, every name and shape matching."""
    mismatch = first_mismatch(network.state_dict(), weights)
    if mismatch is not None:
        raise CheckpointError(f"{path}: the weights do not fit {describe(model, image_size)}: {mismatch}")
    network.load_state_dict(weights)
