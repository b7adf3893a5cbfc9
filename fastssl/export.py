"""The export of a run's student backbone: a plain state dict and a model card.

The exported CNN is a torchvision state dict without its classifier (fastssl's ResNet keeps
torchvision's parameter names, ``TorchvisionNet`` torchvision's ``features`` module). At
torchvision's width (``--model.width 64``) a ResNet loads strictly into
``torchvision.models.resnet18`` / ``resnet34`` / ``resnet50`` once the stem matches the run's
and the classifier is removed::

    model = torchvision.models.resnet18()
    model.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False)  # the CIFAR stem (model.cifar_stem)
    model.maxpool = torch.nn.Identity()                        # dropped unless model.maxpool
    model.fc = torch.nn.Identity()                             # the export has no classifier
    model.load_state_dict(torch.load("backbone.pt"))

A MobileNet-V2, MobileNet-V3-small or EfficientNet-B0 (always torchvision's widths) loads the
same way into ``torchvision.models.<arch>()`` with ``model.classifier = torch.nn.Identity()``:
torchvision's forward is features → average pool → flatten → classifier, so the model then
gives the pooled features fastssl's backbone gives, and the Identity has no parameters, so
the whole model loads strictly. With the CIFAR stem the lines first set the strides (and, for
MobileNet-V3, the identity shortcut) in which ``fastssl.models.torchvision_nets.TorchvisionNet``
differs from torchvision's model, e.g. for MobileNet-V2::

    model.features[0][0].stride = (1, 1)
    model.features[2].conv[1][0].stride = (1, 1)

The model card's ``weights.build`` holds exactly these lines for the run (the tests execute
them). torchvision's ResNets have 64 channels in the first stage: a narrower ``--model.width``
has the same names but other shapes and loads only into ``fastssl.models.resnet.ResNet``
(the card's ``weights.loads_into`` says "fastssl"). A ViT exports its timm state dict, which
loads into the ``timm.create_model`` call the card names. The card also names the data set,
absolute and relative to the export folder, so an export moved with its data set still
finds it (``fastssl.weights`` loads an export back).
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from torch import Tensor

from fastssl.config import ModelConfig
from fastssl.eval.linear import headline
from fastssl.models.torchvision_nets import CONSTRUCTORS, TorchvisionNet
from fastssl.models.vit import TIMM_NAMES
from fastssl.run_folder import RunFolderError
from fastssl.train.checkpoint import save_atomic, write_atomic
from fastssl.weights import CARD_FILE, WEIGHTS_FILE, Network, TrainedBackbone, load_checkpoint, outside_names


def exported_state_dict(trained: TrainedBackbone) -> dict[str, Tensor]:
    """torchvision names for a CNN (no ``fc`` or ``classifier``), timm's for a ViT; contiguous
    CPU tensors."""
    state = outside_names(trained.network).state_dict()
    return {name: value.detach().cpu().contiguous() for name, value in state.items()}


def loads_into(model: ModelConfig) -> str:
    """The library whose model the export loads into: timm (ViT), torchvision (MobileNets,
    EfficientNet-B0 and ResNets of width 64) or fastssl (narrower ResNets, which torchvision
    cannot build)."""
    if model.arch.startswith("vit"):
        return "timm"
    if model.arch in CONSTRUCTORS:  # built at torchvision's widths only
        return "torchvision"
    return "torchvision" if model.width == 64 else "fastssl"


def attribute_path(name: str) -> str:
    """``features.2.conv.1.0`` (a ``named_modules`` name) as Python: ``.features[2].conv[1][0]``."""
    return "".join(f"[{part}]" if part.isdigit() else f".{part}" for part in name.split("."))


@functools.cache
def cifar_stem_changes(arch: str) -> tuple[str, ...]:
    """The assignments that make ``torchvision.models.<arch>()`` (``model``) run as
    ``TorchvisionNet``'s CIFAR stem: each convolution's ``stride`` and each block's
    ``use_res_connect`` in which the two differ, read off the two networks."""
    theirs = dict(CONSTRUCTORS[arch](weights=None).features.named_modules())
    ours = TorchvisionNet(arch, cifar_stem=True, norm="bn").features
    changes = []
    for name, module in ours.named_modules():
        for attribute in ("stride", "use_res_connect"):
            value = getattr(module, attribute, None)
            if value is not None and value != getattr(theirs[name], attribute):
                changes.append(f"model{attribute_path(f'features.{name}' if name else 'features')}.{attribute} = "
                               f"{value!r}")
    return tuple(changes)


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
    if model.arch in CONSTRUCTORS:  # ``maxpool`` is a ResNet option: these ignore it
        changes = cifar_stem_changes(model.arch) if model.cifar_stem else ()
        return "\n".join([*lines, *changes, "model.classifier = torch.nn.Identity()", load])
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


def data_set_now(trained: TrainedBackbone) -> Path:
    """The run's data set where it is now (``TrainedBackbone.data_set``), else where it was:
    an export needs no data set, its card names it all the same."""
    try:
        return trained.data_set().resolve()
    except RunFolderError:
        return Path(str(trained.data))


def model_card(trained: TrainedBackbone, weights: Path, weights_sha256: str) -> dict[str, Any]:
    """What the export is, how it was trained and how well it does, from the checkpoint and
    the run folder's ``summary.json`` and ``linear.json`` (absent entries are null)."""
    summary = read_json(trained.folder / "summary.json") or {}
    config, model, views = trained.config, trained.model, trained.views
    data = data_set_now(trained)
    meta = read_json(data / "meta.json") or {}
    knn = summary.get("knn", {})
    linear = read_json(trained.folder / "linear.json") or {}
    return {
        "name": trained.name,
        "method": trained.method,
        "network": trained.role,
        "data_set": {"path": str(data), "relative_path": os.path.relpath(data, weights.parent.resolve()),
                     "source": meta.get("source"), "classes": len(meta["classes"]) if "classes" in meta else None},
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
        "checkpoint": str(trained.source),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def export(run: Path, out_dir: Path, network: Network = "student") -> dict[str, Any]:
    """Write ``backbone.pt`` (the student's or the EMA teacher's backbone as a state dict) of
    a run folder or a checkpoint and ``model_card.json`` into ``out_dir``, each atomically;
    returns the card."""
    trained = load_checkpoint(run, network)
    state = exported_state_dict(trained)
    out_dir.mkdir(parents=True, exist_ok=True)
    weights = out_dir / WEIGHTS_FILE
    save_atomic(state, weights)
    sha256 = hashlib.sha256(weights.read_bytes()).hexdigest()
    card = model_card(trained, weights, sha256)
    write_text_atomic(out_dir / CARD_FILE, json.dumps(card, indent=1))
    return card
