"""The seed-003 study's own figures (``../shared/seeds/003_*.txt``), transcribed row by row.

Test accuracy as a fraction; the ImageNette cells also give minutes and peak GPU memory
("Go", gigabytes) on a GPU the study does not name. NABirds has top-1 and top-5 for the
LoRot-I and DCL columns only. The study's ResNet-18 trained 200 epochs at batch 256 on
224 px views, then a linear classifier.
"""

# ruff: noqa: E501 (the transcribed rows stay one per line, as in the seed)
from __future__ import annotations

import re
from dataclasses import dataclass

COLUMNS = ("baseline", "simclr", "orthogonality", "lorot", "dcl")
_ROWS = {"BarlowTwins": "barlow_twins", "SimCLR": "simclr", "SimSiam": "simsiam", "SwaV": "swav", "BYOL": "byol",
         "VICReg": "vicreg", "VICRegL": "vicregl"}

_IMAGENETTE = """
BarlowTwins | 0.705 (123.8Min/11.1Go) | 0.772 (127.6Min/11.1Go) | 0.728 (132.3Min/11.0Go) | 0.675 (80.1Min/11.0Go) | 0.667 (90.1Min/11.0Go)
SimCLR | 0.679 (119.2Min/10.9GO) | 0.705 (135.8Min/11.8Go) | 0.682 (142.8Min/11.8Go) | 0.616 (64.8Min/11.8Go) | 0.626 (69.8Min/11.8Go)
SimSiam | 0.682 (119.1Min/11.9Go) | 0.691 (142.3Min/11.0Go) | 0.667 (142.3Min/12.7Go) | 0.611 (66.7Min/12.7Go) | 0.642 (66.3Min/12.7Go)
SwaV | 0.698 (120.5Min/11.9Go) | 0.693 (123.8Min/11.1Go) | 0.548 (143.1Min/12.7Go) | 0.626 (62.7Min/12.7Go) | 0.637 (61.2Min/12.7Go)
BYOL | 0.663 (122.4Min/13.3Go) | 0.659 (160.9Min/11.0Go) | 0.632 (164.2Min/14.2Go) | 0.610 (70.1Min/14.2Go) | 0.640 (70.0Min/14.2Go)
VICReg | 0.653 (121.0Min/11.8Go) | 0.718 (195.1Min/10.9GO) | 0.684 (196.6Min/12.7Go) | 0.613 (60.1Min/11.8Go) | 0.619 (59.7Min/11.8Go)
VICRegL, α=0.95 | 0.746 (60.0Min/7.7Go) | 0.744 (157.2Min/6.8Go) | 0.713 (160.8Min/8.6Go) | 0.702 (59.8Min/7.7Go) | 0.704 (59.8Min/7.7Go)
VICRegL, α=0.75 | 0.743 (59.1Min/7.7Go) | 0.744 (159.3Min/7.7Go) | 0.712 (171.3Min/8.6Go) | 0.700 (59.3Min/8.6Go) | 0.701 (56.1Min/8.6Go)
VICRegL, α=0.50 | 0.740 (58.2Min/7.7Go) | 0.742 (178.2Min/7.7Go) | 0.706 (188.5Min/8.6Go) | 0.697 (57.2Min/7.7Go) | 0.697 (54.2Min/7.7Go)
VICRegL, α=0.25 | 0.741 (58.1Min/7.7Go) | 0.742 (178.4Min/6.8Go) | 0.706 (198.5Min/8.6Go) | 0.695 (56.8Min/7.7Go) | 0.693 (53.8Min/7.7Go)
"""
_IMAGENETTE_V2_160 = """
BarlowTwins | 0.763 | 0.677 | 0.653 | 0.649 | 0.618
SimCLR | 0.685 | 0.665 | 0.594 | 0.588 | 0.621
SimSiam | 0.678 | 0.663 | 0.592 | 0.590 | 0.652
SwaV | 0.678 | 0.667 | 0.600 | 0.597 | 0.640
BYOL | 0.661 | 0.636 | 0.587 | 0.589 | 0.632
VICReg | 0.702 | 0.634 | 0.600 | 0.597 | 0.605
VICRegL, α=0.95 | 0.724 | 0.723 | 0.698 | 0.691 | 0.692
VICRegL, α=0.75 | 0.721 | 0.723 | 0.694 | 0.684 | 0.687
VICRegL, α=0.50 | 0.709 | 0.710 | 0.691 | 0.680 | 0.682
VICRegL, α=0.25 | 0.712 | 0.706 | 0.690 | 0.674 | 0.674
"""
_IMAGEWOOF = """
BarlowTwins | 0.507 | 0.455 | 0.460 | 0.448 | 0.416
SimCLR | 0.457 | 0.423 | 0.403 | 0.396 | 0.397
SimSiam | 0.437 | 0.420 | 0.393 | 0.393 | 0.401
SwaV | 0.051 | 0.102 | 0.393 | 0.395 | 0.398
BYOL | 0.436 | 0.401 | 0.392 | 0.399 | 0.413
VICReg | 0.444 | 0.429 | 0.400 | 0.398 | 0.381
VICRegL, α=0.95 | 0.464 | 0.446 | 0.443 | 0.428 | 0.430
VICRegL, α=0.75 | 0.465 | 0.443 | 0.435 | 0.425 | 0.427
VICRegL, α=0.50 | 0.466 | 0.443 | 0.435 | 0.423 | 0.420
VICRegL, α=0.25 | 0.464 | 0.452 | 0.440 | 0.434 | 0.433
"""
# Columns: LoRot-I top-1, LoRot-I top-5, DCL top-1, DCL top-5.
_NABIRDS = """
BarlowTwins | 0.082 | 0.188554 | 0.093 | 0.214596
SimCLR | 0.079 | 0.197335 | 0.097 | 0.237408
SimSiam | 0.042 | 0.123549 | 0.061 | 0.161401
SwaV | 0.073 | 0.193197 | 0.097 | 0.230342
BYOL | 0.040 | 0.116786 | 0.059 | 0.165540
VICReg | 0.083 | 0.188654 | 0.099 | 0.224589
VICRegL α=0.95 | 0.155 | 0.334915 | 0.154 | 0.333603
VICRegL α=0.75 | 0.155 | 0.332694 | 0.153 | 0.333199
VICRegL α=0.50 | 0.150 | 0.326739 | 0.150 | 0.327344
VICRegL α=0.25 | 0.144 | 0.314626 | 0.144 | 0.316443
"""


@dataclass(frozen=True)
class SeedCell:
    top1: float  # %
    top5: float | None = None  # %
    minutes: float | None = None
    peak_gb: float | None = None


def _row_key(label: str) -> str:
    """"VICRegL, α=0.50" → "vicregl α=0.5" (the study tables' row names); "SwaV" → "swav"."""
    match = re.fullmatch(r"(\w+),? ?(?:α=([\d.]+))?", label.strip())
    assert match is not None, label
    method = _ROWS[match.group(1)]
    return method if match.group(2) is None else f"{method} α={float(match.group(2)):g}"


def _parse(text: str, columns: tuple[str, ...]) -> dict[tuple[str, str], SeedCell]:
    cells = {}
    for line in text.strip().splitlines():
        label, *values = (part.strip() for part in line.split("|"))
        for column, value in zip(columns, values, strict=True):
            number = re.fullmatch(r"([\d.]+)(?: \(([\d.]+)Min/([\d.]+)G[Oo]\))?", value)
            assert number is not None, value
            minutes, peak = number.group(2), number.group(3)
            cells[_row_key(label), column] = SeedCell(100 * float(number.group(1)),
                                                      minutes=None if minutes is None else float(minutes),
                                                      peak_gb=None if peak is None else float(peak))
    return cells


def _nabirds() -> dict[tuple[str, str], SeedCell]:
    cells = {}
    for line in _NABIRDS.strip().splitlines():
        label, lorot1, lorot5, dcl1, dcl5 = (part.strip() for part in line.split("|"))
        cells[_row_key(label), "lorot"] = SeedCell(100 * float(lorot1), 100 * float(lorot5))
        cells[_row_key(label), "dcl"] = SeedCell(100 * float(dcl1), 100 * float(dcl5))
    return cells


# The seed's tables by name (a grid's ``seed_table``): (row, transformation) → its cell.
SEED_TABLES: dict[str, dict[tuple[str, str], SeedCell]] = {
    "imagenette": _parse(_IMAGENETTE, COLUMNS),
    "imagenette-v2-160": _parse(_IMAGENETTE_V2_160, COLUMNS),
    "imagewoof": _parse(_IMAGEWOOF, COLUMNS),
    "nabirds": _nabirds(),
}
