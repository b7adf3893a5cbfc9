"""What a conversion met besides the pixels it stored, for ``meta.json`` and the summary:
images skipped, conversions made, held-out images also in another split, files ignored,
class folders without images."""

from __future__ import annotations

from typing import Any

from conversion.sources import Sample, Source


def findings(source: Source, splits: dict[str, dict], duplicates: list[tuple[str, str]]) -> dict[str, Any]:
    """meta.json's account of what the conversion met: the images skipped, the conversions
    made (``conversion.decode.KINDS``, counted), the held-out images also in another split,
    the files ignored and the class folders without images. Moves the writers' per-split
    ``skipped`` and ``decoded`` entries to the top."""
    skipped = [{"split": name, **item} for name, entry in splits.items() for item in entry.pop("skipped", [])]
    decoded: dict[str, int] = {}
    for entry in splits.values():
        for kind, count in entry.pop("decoded", {}).items():
            decoded[kind] = decoded.get(kind, 0) + count
    return {
        "skipped": skipped,
        "decoded": decoded,
        "duplicates": [{"held_out": held_out, "also": also} for held_out, also in duplicates],
        "ignored_files": source.ignored,
        "empty_class_folders": source.empty_folders,
    }


def stored_samples(samples: list[Sample], entry: dict) -> list[Sample]:
    """The samples a split stored (those not skipped), for its round-trip check."""
    skipped = {item["path"] for item in entry.get("skipped", [])}
    return [sample for sample in samples if sample.path not in skipped] if skipped else samples


def counted(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def first_few(names: list[str], shown: int = 3) -> str:
    return ", ".join(names[:shown]) + (", …" if len(names) > shown else "")


def summary_parts(meta: dict, alpha_background: str) -> list[str]:
    """What the summary line adds to the counts: conversions made, EXIF rotations not
    applied, images skipped, held-out images also in another split."""
    decoded = dict(meta["decoded"])
    parts = []
    rotated = decoded.pop("exif_rotation", 0)
    if decoded:
        names = {"alpha_composited": f"alpha-composited on {alpha_background}", "cmyk": "CMYK"}
        parts.append("decoded " + ", ".join(f"{count} {names.get(kind, kind)}" for kind, count in decoded.items()))
    if rotated:
        parts.append(f"{counted(rotated, 'image')} with an EXIF rotation, not applied")
    if meta["skipped"]:
        parts.append(f"skipped {counted(len(meta['skipped']), 'unreadable image')} (listed in meta.json)")
    if meta["duplicates"]:
        pairs = [f"{pair['held_out']} = {pair['also']}" for pair in meta["duplicates"]]
        parts.append(f"{counted(len(pairs), 'held-out image')} also in another split ({first_few(pairs)})")
    return parts


def leftover_warnings(meta: dict) -> list[str]:
    ignored, empty = meta["ignored_files"], meta["empty_class_folders"]
    warnings = []
    if ignored:
        warnings.append(f"ignored {counted(len(ignored), 'file')} that are not images in a class folder "
                        f"({first_few(ignored)})")
    warnings += [f"class folder {folder} has no images" for folder in empty]
    return ["; ".join(warnings)] if warnings else []
