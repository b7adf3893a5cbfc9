"""Checking a converted data set against what its conversion recorded, before anything trains on it.

``meta.json`` lists, per split, every file with its sha256 (``"sha256"``) and, for data sets
converted since issue 13, a quick fingerprint of each (``"quick"``, made by ``fingerprint``).
``verify(info, level)`` raises ``DatasetError`` naming the first file that differs:

- ``full``: the sha256 of every listed file (reads every byte: about 0.8 s per GB that the
  page cache holds, the disk's speed otherwise);
- ``quick``: (a) each listed file's size is its size at conversion; (b) each ``.npy`` file's
  header parses, gives the shape and dtype recorded at conversion, and its array fills the
  file exactly; (c) 16 blocks of 64 KiB per file, at offsets spread evenly from the first byte
  to the last (a file of at most 1 MiB, such as labels.npy, is one block: itself), hash as
  recorded; a few milliseconds in all. Zeroed, truncated or replaced files are caught, and
  damage anywhere in a sampled block; a change wholly between sampled blocks is not: only
  ``full`` sees those;
- ``off``: nothing.

A data set converted before fingerprints existed gets, at ``quick``, only (b) without the
recorded shape: its headers parse and fill their files (a truncated ``.npy`` is caught); one
without any checksums cannot be verified: one warning line each, and the run goes on.

A success is remembered outside the data folder, which may be read-only, in
``$FASTSSL_CACHE_DIR/verified.json`` (default ``$XDG_CACHE_HOME/fastssl``, else
``~/.cache/fastssl``): per resolved data set path and level, each listed file's (size,
mtime_ns, inode). A later run that finds the same is not checked again; ``full`` also
answers for ``quick``. The cache is only a shortcut: one that cannot be read or written
is ignored.

Every process of a multi-process run verifies for itself, before the processes meet: each
then fails on its own with the same line, where a check by the main process alone would
need a barrier and a broadcast of its verdict (or leave the others waiting). The price,
``full`` reading the files once per process on a node, falls mostly on the page cache.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import numpy as np

from pipelines.checksums import sha256
from pipelines.dataset import META_FILE, DatasetError, DatasetInfo

Level = Literal["full", "quick", "off"]
BLOCK_SIZE = 64 << 10
BLOCKS = 16  # per file, the first and last included
CACHE_VERSION = 1
# the levels whose remembered pass answers for each level
ANSWERED_BY = {"full": ("full",), "quick": ("full", "quick")}


def fingerprint(folder: Path, files: Iterable[str]) -> dict[str, Any]:
    """What ``quick`` checks of a split's ``files`` (names in ``folder``), as the split's meta
    entry ``{"quick": {file: {"size", "block_size", "offsets", "sha256", "npy"?}}}``."""
    entries = {}
    for name in files:
        path = folder / name
        size = path.stat().st_size
        block_size, offsets = sample_blocks(size)
        entry: dict[str, Any] = {"size": size, "block_size": block_size, "offsets": offsets,
                                 "sha256": block_hashes(path, block_size, offsets)}
        if name.endswith(".npy"):
            shape, dtype = npy_layout(path, size)
            entry["npy"] = {"shape": list(shape), "dtype": dtype}
        entries[name] = entry
    return {"quick": entries}


def sample_blocks(size: int) -> tuple[int, list[int]]:
    """(block size, offsets) of the blocks sampled from a file of ``size`` bytes: one block, the
    whole file, when that is no more than the sample would read anyway."""
    if size <= BLOCK_SIZE * BLOCKS:
        return size, [0]
    return BLOCK_SIZE, [i * (size - BLOCK_SIZE) // (BLOCKS - 1) for i in range(BLOCKS)]


def block_hashes(path: Path, block_size: int, offsets: list[int]) -> list[str]:
    with open(path, "rb") as handle:
        return [hashlib.sha256(os.pread(handle.fileno(), block_size, offset)).hexdigest() for offset in offsets]


def npy_layout(path: Path, size: int) -> tuple[tuple[int, ...], str]:
    """(shape, dtype) from a ``.npy`` header, whose array must fill the file's ``size`` bytes."""
    try:
        array = np.load(path, mmap_mode="r")  # parses the header; maps, reads no data
        shape, dtype, end = array.shape, array.dtype.str, array.offset + array.nbytes
        del array
    except (OSError, ValueError, EOFError) as error:
        raise DatasetError(f"{path}: unreadable .npy file ({error}; re-convert it)") from error
    if end != size:
        raise DatasetError(f"{path}: {size} bytes, but its header says {end} (truncated or altered; re-convert it)")
    return shape, dtype


def verify(info: DatasetInfo, level: Level) -> None:
    """``DatasetError`` naming the first listed file that differs from its conversion, at ``level``."""
    if level == "off":
        return
    if level not in ANSWERED_BY:
        raise ValueError(f"verification level {level!r}: full, quick or off")
    unlisted = [split for split, entry in info.splits.items() if not entry.get("sha256")]
    if unlisted:
        warn(f"{info.root}: meta.json records no checksums for {', '.join(unlisted)}, so they cannot be "
             "verified (re-convert the data set to get them)")
    files = [(split, name, digest) for split, entry in info.splits.items()
             for name, digest in (entry.get("sha256") or {}).items()]
    signature = stat_signature(info.root, [f"{split}/{name}" for split, name, _ in files])
    key = str(info.root.resolve())
    cache = read_cache()
    passed = cache.get(key)
    passed = passed if isinstance(passed, dict) else {}
    if signature is not None and any(passed.get(done) == signature for done in ANSWERED_BY[level]):
        return
    old = [split for split, entry in info.splits.items() if entry.get("sha256") and "quick" not in entry]
    if level == "quick" and old:
        warn(f"{info.root}: converted without quick fingerprints ({', '.join(old)}): --data-verify quick only checks "
             "that the .npy headers parse and fill their files (--data-verify full checks everything)")
    for split, name, digest in files:
        recorded = info.splits[split].get("quick", {}).get(name)
        check_file(info.root / split / name, digest, recorded, level)
    if signature is not None:
        cache[key] = {**passed, level: signature}
        write_cache(cache)


def check_file(path: Path, digest: str, recorded: dict[str, Any] | None, level: Level) -> None:
    try:
        size = path.stat().st_size
    except OSError as error:
        reason = error.strerror or error
        raise DatasetError(f"{path}: {reason} (meta.json lists it; re-convert the data set)") from error
    if recorded is not None and size != recorded["size"]:
        raise DatasetError(f"{path}: {size} bytes, {recorded['size']} at conversion (truncated or replaced; "
                           "re-convert it)")
    mismatch = DatasetError(f"{path}: checksum mismatch (the file changed since conversion; re-convert it)")
    if level == "full":
        if sha256(path) != digest:
            raise mismatch
        return
    if path.suffix == ".npy":
        shape, dtype = npy_layout(path, size)
        wanted = recorded.get("npy") if recorded else None
        if wanted is not None and (list(shape) != wanted["shape"] or dtype != wanted["dtype"]):
            raise DatasetError(f"{path}: {np.dtype(dtype).name} {shape}, {np.dtype(wanted['dtype']).name} "
                               f"{tuple(wanted['shape'])} at conversion (replaced; re-convert it)")
    if recorded is not None and block_hashes(path, recorded["block_size"], recorded["offsets"]) != recorded["sha256"]:
        raise mismatch


def stat_signature(root: Path, files: Iterable[str]) -> dict[str, list[int]] | None:
    """(size, mtime_ns, inode) of meta.json and every listed file; None when one is missing
    (verification then names it)."""
    signature = {}
    try:
        for relative in (META_FILE, *files):
            stat = (root / relative).stat()
            signature[relative] = [stat.st_size, stat.st_mtime_ns, stat.st_ino]
    except OSError:
        return None
    return signature


def cache_path() -> Path:
    """$FASTSSL_CACHE_DIR/verified.json, by default under $XDG_CACHE_HOME (or ~/.cache)."""
    cache_home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return Path(os.environ.get("FASTSSL_CACHE_DIR") or cache_home / "fastssl") / "verified.json"


def read_cache() -> dict[str, Any]:
    try:
        cache = json.loads(cache_path().read_text())
        if cache.get("version") == CACHE_VERSION and isinstance(cache.get("data_sets"), dict):
            return cache["data_sets"]
    except (OSError, ValueError, AttributeError):
        pass
    return {}


def write_cache(data_sets: dict[str, Any]) -> None:
    # Written whole under a temporary name, then renamed: processes verifying at once never
    # leave a half-written file (one of them wins, which is all a cache needs).
    path = cache_path()
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        kept = {root: passed for root, passed in data_sets.items() if Path(root).is_dir()}  # forget deleted ones
        partial.write_text(json.dumps({"version": CACHE_VERSION, "data_sets": kept}))
        os.replace(partial, path)
    except OSError:
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)


def warn(message: str) -> None:
    print(f"fastssl: warning: {message}", file=sys.stderr, flush=True)
