"""Export a run's student backbone as a plain state dict with a model card.

    python tools/export.py runs/<name> [--out DIR]      # the run folder, or runs/<name>/checkpoint.pt

Writes ``backbone.pt`` and ``model_card.json`` (method, data set, commit, configuration,
kNN and linear accuracies, the Python that rebuilds the model and loads the weights) into
``--out`` (default: ``export/`` in the run folder), each under a temporary name, then
renamed. What ``backbone.pt`` loads into:

- a ResNet of torchvision's width (``--model.width 64``, the recipes' default): a
  torchvision ResNet-18/50 state dict without ``fc`` (the CIFAR stem and a dropped max-pool
  as the card's build lines say; see ``fastssl/export.py``);
- a narrower ResNet (``--model.width 8``, say): the same names at other shapes, which no
  torchvision model takes; it loads only into ``fastssl.models.resnet.ResNet``;
- a ViT: a timm state dict for the ``timm.create_model`` call the card names.

``tools/linear_probe.py`` and ``tools/diagnose.py`` take the export (its folder or
``backbone.pt``) as they take the run.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The repository root replaces this script's folder on the path: tools/profile.py would
# otherwise shadow the standard library's ``profile`` module (imported by torch).
sys.path[0] = str(Path(__file__).resolve().parents[1])

import tyro  # noqa: E402

from fastssl.cli import fail, parse  # noqa: E402
from fastssl.export import export  # noqa: E402
from fastssl.run_folder import RunFolderError, checkpoint_in  # noqa: E402
from fastssl.weights import (  # noqa: E402
    CARD_FILE,
    CheckpointError,
    Network,  # noqa: E402
)

PROGRAM = "export.py"


@dataclass(frozen=True)
class ExportConfig:
    run: tyro.conf.Positional[Path]  # a run folder (runs/<name>) or its checkpoint.pt
    out: Path | None = None  # folder for backbone.pt and model_card.json; default: <run folder>/export[-teacher]
    network: Network = "student"  # the student's backbone, or the EMA teacher's (methods that have one)


def what_it_is(card: dict[str, Any]) -> str:
    """The exported state dict in words, plainly so for a narrow ResNet."""
    into = card["weights"]["loads_into"]
    if into == "fastssl":
        return (f"a state dict with torchvision's names that loads only into fastssl's ResNet (width "
                f"{card['config']['model']['width']}; torchvision's ResNets are 64 channels wide in the first stage)")
    return f"a {into} state dict"


def main(args: list[str] | None = None) -> dict:
    cfg = parse(ExportConfig, None, args, PROGRAM)
    try:
        checkpoint = checkpoint_in(cfg.run)
    except RunFolderError as error:
        fail(PROGRAM, str(error))
    out = cfg.out or checkpoint.parent / ("export" if cfg.network == "student" else "export-teacher")
    if out.exists() and not out.is_dir():
        fail(PROGRAM, f"--out {out}: not a folder")
    try:
        card = export(checkpoint, out, cfg.network)
    except (CheckpointError, RunFolderError, ImportError) as error:
        fail(PROGRAM, str(error))
    except OSError as error:
        fail(PROGRAM, f"--out {out}: cannot write ({error})")
    knn = card["knn"].get(cfg.network, {})
    accuracy = "" if knn.get("last") is None else f"; kNN last {knn['last']:.2f} % (best {knn['best']:.2f} %)"
    print(f"{card['method']} {card['architecture']} backbone: {what_it_is(card)}{accuracy}")
    print(f"  written: {out / card['weights']['file']}, {out / CARD_FILE}")
    print("  load it with:\n    " + card["weights"]["build"].replace("\n", "\n    "))
    return card


if __name__ == "__main__":
    main()
