"""Export a run's student backbone as a plain state dict with a model card.

    python tools/export.py runs/<name>/checkpoint.pt [--out DIR]

Writes ``backbone.pt`` (a torchvision ResNet state dict without ``fc``, or a ViT's timm
state dict) and ``model_card.json`` (method, data set, commit, configuration, kNN and
linear accuracies, the Python that rebuilds the model and loads the weights) into ``--out``
(default: ``export/`` in the run folder), each under a temporary name, then renamed. See
``fastssl/export.py`` for how to build the torchvision model for the CIFAR stem.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

# The repository root replaces this script's folder on the path: tools/profile.py would
# otherwise shadow the standard library's ``profile`` module (imported by torch).
sys.path[0] = str(Path(__file__).resolve().parents[1])

import tyro  # noqa: E402

from fastssl.cli import fail, parse  # noqa: E402
from fastssl.export import CARD_FILE, CheckpointError, export  # noqa: E402

PROGRAM = "export.py"


@dataclass(frozen=True)
class ExportConfig:
    checkpoint: tyro.conf.Positional[Path]  # runs/<name>/checkpoint.pt
    out: Path | None = None  # folder for backbone.pt and model_card.json; default: <run folder>/export


def main(args: list[str] | None = None) -> dict:
    cfg = parse(ExportConfig, None, args, PROGRAM)
    out = cfg.out or cfg.checkpoint.parent / "export"
    if out.exists() and not out.is_dir():
        fail(PROGRAM, f"--out {out}: not a folder")
    try:
        card = export(cfg.checkpoint, out)
    except (CheckpointError, ImportError) as error:
        fail(PROGRAM, str(error))
    except OSError as error:
        fail(PROGRAM, f"--out {out}: cannot write ({error})")
    knn = card["knn"].get("student", {})
    accuracy = "" if knn.get("last") is None else f", kNN last {knn['last']:.2f} % (best {knn['best']:.2f} %)"
    print(f"{card['method']} {card['architecture']} backbone (a state dict for {card['weights']['loads_into']})"
          f"{accuracy}")
    print(f"  written: {out / card['weights']['file']}, {out / CARD_FILE}")
    print("  load it with:\n    " + card["weights"]["build"].replace("\n", "\n    "))
    return card


if __name__ == "__main__":
    main()
