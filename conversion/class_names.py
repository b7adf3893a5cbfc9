"""Human-readable class names, stored beside the class folders' ids in ``meta.json``.

Where they come from, first found wins: ``--class-names FILE`` ("<class id> <name>" per
line); the source itself (``Source.names``: Tiny-ImageNet's ``words.txt``; NABirds'
``classes.txt`` already names its classes); a small built-in table of the WordNet ids of Imagenette and ImageWoof,
whose archives have only folders named by id; else the id itself.
"""

from __future__ import annotations

from pathlib import Path

from conversion.sources import SourceError

# fast.ai's Imagenette and ImageWoof (github.com/fastai/imagenette), ImageNet's synset words.
WORDNET_NAMES = {
    # Imagenette
    "n01440764": "tench",
    "n02102040": "English springer",
    "n02979186": "cassette player",
    "n03000684": "chain saw",
    "n03028079": "church",
    "n03394916": "French horn",
    "n03417042": "garbage truck",
    "n03425413": "gas pump",
    "n03445777": "golf ball",
    "n03888257": "parachute",
    # ImageWoof
    "n02086240": "Shih-Tzu",
    "n02087394": "Rhodesian ridgeback",
    "n02088364": "beagle",
    "n02089973": "English foxhound",
    "n02093754": "Border terrier",
    "n02096294": "Australian terrier",
    "n02099601": "golden retriever",
    "n02105641": "Old English sheepdog",
    "n02111889": "Samoyed",
    "n02115641": "dingo",
}


def read_names_file(path: Path, classes: list[str]) -> dict[str, str]:
    """``--class-names FILE``: "<class id> <name>" per line, every id one of ``classes``."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise SourceError(f"--class-names {path}: unreadable ({error})") from error
    names: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        class_id, _, name = line.strip().partition(" ")
        if not name.strip():
            raise SourceError(f"--class-names {path}: line {number}: expected '<class id> <name>', got '{line}'")
        if class_id not in classes:
            raise SourceError(f"--class-names {path}: line {number}: '{class_id}' is not a class of the source")
        names[class_id] = name.strip()
    return names


def class_names(classes: list[str], from_source: dict[str, str], from_file: dict[str, str]) -> list[str]:
    """One name per class id, in the order of ``classes``."""
    return [from_file.get(c) or from_source.get(c) or WORDNET_NAMES.get(c) or c for c in classes]
