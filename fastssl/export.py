"""A trained network out of a run: the backbone of a checkpoint, rebuilt from the run's own
configuration, and its export as a plain state dict with a model card.

A checkpoint (``runs/<name>/checkpoint.pt``) holds ``method`` (the method's state dict, the
student backbone under ``student.backbone.``) and ``config`` (the run's ``TrainConfig`` as
JSON), so any checkpoint can be evaluated or exported without knowing which recipe made it.

The exported ResNet is a torchvision state dict without ``fc`` (fastssl's ResNet keeps
torchvision's parameter names). It loads strictly into ``torchvision.models.resnet18`` /
``resnet50`` once the stem matches the run's and the classifier is removed::

    model = torchvision.models.resnet18()
    model.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False)  # the CIFAR stem (model.cifar_stem)
    model.maxpool = torch.nn.Identity()                        # dropped unless model.maxpool
    model.fc = torch.nn.Identity()                             # the export has no classifier
    model.load_state_dict(torch.load("backbone.pt"))

The model card's ``weights.build`` holds exactly these lines for the run (the tests execute
them). torchvision's ResNets have 64 channels in the first stage: a narrower ``--model.width``
loads only into ``fastssl.models.resnet.ResNet``. A ViT exports its timm state dict, which
loads into the ``timm.create_model`` call the card names.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from fastssl.config import ModelConfig
from fastssl.eval.linear import headline
from fastssl.models.backbone import backbone_from_config
from fastssl.models.vit import TIMM_NAMES, ViT
from fastssl.train.checkpoint import save_atomic, write_atomic
from pipelines.views import ViewConfig

STUDENT_BACKBONE = "student.backbone."  # the prefix of its parameters in a checkpoint's "method"
WEIGHTS_FILE, CARD_FILE = "backbone.pt", "model_card.json"


class CheckpointError(Exception):
    """A path that is not a readable fastssl checkpoint."""


@dataclass
class TrainedBackbone:
    network: nn.Module  # in eval mode, BN with the running statistics
    config: dict[str, Any]  # the run's TrainConfig as JSON
    model: ModelConfig
    views: ViewConfig  # the training views: evaluation takes their size and normalisation
    run_dir: Path
    epochs_done: int
    method: str  # the recipe that trained it


def from_json(cls: type, values: dict[str, Any]) -> Any:
    """A config dataclass from its JSON (lists back to tuples); unknown keys are ignored,
    since a strict state-dict load catches any architecture they would have changed."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items() if k in names})


def read_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint's contents, loaded as plain tensors and containers (``weights_only``:
    no code runs from the file)."""
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch.load raises many kinds on foreign or truncated files
        raise CheckpointError(f"{path}: not a fastssl checkpoint ({type(error).__name__})") from error
    if not isinstance(state, dict) or not {"method_name", "method", "config"} <= state.keys():
        raise CheckpointError(f"{path}: not a fastssl checkpoint (no 'method_name', 'method' and 'config')")
    return state


def load_backbone(path: Path) -> TrainedBackbone:
    """The run's student backbone, rebuilt from its configuration in eval mode. Split-BN and
    sync-BN are built as plain BN: in eval mode all three are the same function of the same
    parameters and running statistics."""
    state = read_checkpoint(path)
    prefix = STUDENT_BACKBONE
    weights = {k[len(prefix) :]: v for k, v in state["method"].items() if k.startswith(prefix)}
    if not weights:
        raise CheckpointError(f"{path}: holds no student backbone ({prefix}*)")
    config = state["config"]
    try:
        model = dataclasses.replace(from_json(ModelConfig, config["model"]), norm="bn")
        views = from_json(ViewConfig, config["views"])
        network = backbone_from_config(model, views.size, 1)
    except (KeyError, TypeError, AttributeError, ValueError) as error:
        raise CheckpointError(f"{path}: unreadable run configuration ({error})") from error
    try:
        network.load_state_dict(weights)
    except RuntimeError as error:
        first = str(error).splitlines()[0]
        raise CheckpointError(f"{path}: the backbone does not match its configuration ({first})") from error
    return TrainedBackbone(network.eval(), config, model, views, path.parent, state.get("epoch_done", 0),
                           state["method_name"])


def exported_state_dict(trained: TrainedBackbone) -> dict[str, Tensor]:
    """torchvision names for a ResNet (no ``fc``), timm's for a ViT; contiguous CPU tensors."""
    network = trained.network
    state = (network.net if isinstance(network, ViT) else network).state_dict()
    return {name: value.detach().cpu().contiguous() for name, value in state.items()}


def loads_into(model: ModelConfig) -> str:
    """The library whose model the export loads into: timm (ViT), torchvision (ResNets of
    width 64) or fastssl (narrower ResNets, which torchvision cannot build)."""
    if model.arch.startswith("vit"):
        return "timm"
    return "torchvision" if model.width == 64 else "fastssl"


def build_snippet(model: ModelConfig, image_size: int, weights_file: str = WEIGHTS_FILE) -> str:
    """Python that builds the model the export loads into strictly, and loads it."""
    load = f"model.load_state_dict(torch.load({weights_file!r}))"
    if model.arch.startswith("vit"):
        return "\n".join([
            "import timm, torch",
            f"model = timm.create_model({TIMM_NAMES[model.arch]!r}, img_size={image_size}, "
            f"patch_size={model.patch_size}, num_classes=0, dynamic_img_size=True)",
            load,
        ])
    if loads_into(model) == "fastssl":
        return "\n".join([
            "import torch",
            "from fastssl.models.resnet import ResNet",
            f"model = ResNet({model.arch!r}, cifar_stem={model.cifar_stem}, maxpool={model.maxpool}, "
            f"width={model.width})",
            load,
        ])
    lines = ["import torch, torchvision", f"model = torchvision.models.{model.arch}()"]
    if model.cifar_stem:
        lines.append("model.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False)")
    if not model.maxpool:
        lines.append("model.maxpool = torch.nn.Identity()")
    return "\n".join([*lines, "model.fc = torch.nn.Identity()", load])


def write_text_atomic(path: Path, text: str) -> None:
    write_atomic(path, lambda temporary: temporary.write_text(text))


def read_json(path: Path) -> dict[str, Any] | None:
    """A run folder's JSON file, or None where it is absent or unreadable."""
    try:
        value = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return value if isinstance(value, dict) else None


def model_card(trained: TrainedBackbone, checkpoint_path: Path, weights: Path, weights_sha256: str) -> dict[str, Any]:
    """What the export is, how it was trained and how well it does, from the checkpoint and
    the run folder's ``summary.json`` and ``linear.json`` (absent entries are null)."""
    summary = read_json(trained.run_dir / "summary.json") or {}
    config, model, views = trained.config, trained.model, trained.views
    meta = read_json(Path(config.get("data", "")) / "meta.json") or {}
    knn = summary.get("knn", {})
    linear = read_json(trained.run_dir / "linear.json") or {}
    return {
        "name": trained.run_dir.name,
        "method": trained.method,
        "data_set": {"path": config.get("data"), "source": meta.get("source"),
                     "classes": len(meta["classes"]) if "classes" in meta else None},
        "architecture": model.arch,
        "feature_dim": trained.network.feature_dim,
        "weights": {
            "file": weights.name, "sha256": weights_sha256,
            "names": "timm" if model.arch.startswith("vit") else "torchvision",  # the state dict's keys
            "loads_into": loads_into(model),
            "build": build_snippet(model, views.size, weights.name),
        },
        "preprocessing": {"size": views.size, "mean": list(views.mean), "std": list(views.std),
                          "crop": "the centred square of each image, resized to size"},
        "training": {"epochs_done": trained.epochs_done, "epochs": config.get("optim", {}).get("epochs"),
                     "batch_size": config.get("optim", {}).get("batch_size"), "finished": summary.get("finished"),
                     "device": summary.get("device"), "wall_time_s": summary.get("wall_time_s")},
        "git_commit": summary.get("git_commit", "unknown"),
        "knn": {name: {k: entry.get(k) for k in ("last", "last_epoch", "best", "best_epoch")}
                for name, entry in knn.items()},
        "linear": {protocol: headline(r) for protocol, r in linear.items() if isinstance(r, dict)} or None,
        "config": config,
        "checkpoint": str(checkpoint_path),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def export(checkpoint_path: Path, out_dir: Path) -> dict[str, Any]:
    """Write ``backbone.pt`` (the student backbone's state dict) and ``model_card.json`` into
    ``out_dir``, each atomically; returns the card."""
    trained = load_backbone(checkpoint_path)
    state = exported_state_dict(trained)
    out_dir.mkdir(parents=True, exist_ok=True)
    weights = out_dir / WEIGHTS_FILE
    save_atomic(state, weights)
    sha256 = hashlib.sha256(weights.read_bytes()).hexdigest()
    card = model_card(trained, checkpoint_path, weights, sha256)
    write_text_atomic(out_dir / CARD_FILE, json.dumps(card, indent=1))
    return card
