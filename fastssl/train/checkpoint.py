"""Checkpoints that a crash, a full disk or bit rot cannot pass off as good.

Every file of a run is written to a temporary name and renamed when complete
(``write_atomic``). A checkpoint also gets a ``.sha256`` file beside it holding the sha256
of its bytes, computed as they are written; a checkpoint whose bytes do not match it is
damaged. A run keeps its newest checkpoints as ``checkpoint.pt``, ``checkpoint.1.pt``, …
(each save shifts the older ones up by one and drops the oldest), and readers take the
newest intact one, saying which they skipped. Each rename is atomic, so a crash at any point
leaves every checkpoint either intact or detectably damaged, never silently wrong.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any, cast

import torch
from torch import Tensor

NEWEST, BEST = "checkpoint.pt", "best.pt"


class DamagedCheckpoint(Exception):
    """A checkpoint whose bytes do not match its checksum, or that cannot be read."""


def write_atomic(path: Path, write: Callable[[Path], object]) -> None:
    """``write(temporary)`` then rename to ``path``: a reader never sees half a file."""
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def save_atomic(state: dict[str, Any], path: Path) -> None:
    write_atomic(path, lambda temporary: torch.save(state, temporary))


class _Hashing:
    """A file that hashes what is written to it."""

    def __init__(self, file: IO[bytes]) -> None:
        self.file, self.sha256 = file, hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        return self.file.write(data)

    def flush(self) -> None:
        self.file.flush()


def checksum_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def save_checksummed(state: dict[str, Any], path: Path) -> None:
    """``state`` at ``path`` and its sha256 beside it, each written atomically (the
    checkpoint first: a crash between the two leaves a mismatch, which reads as damaged)."""
    digest = ""

    def write(temporary: Path) -> None:
        nonlocal digest
        with open(temporary, "wb") as file:
            hashing = _Hashing(file)
            try:
                torch.save(state, cast(IO[bytes], hashing))  # write and flush are all torch.save uses
            except RuntimeError as error:  # its zip writer hides a failed write ("unexpected pos …")
                if isinstance(error.__context__, OSError):
                    raise error.__context__ from error
                raise
            file.flush()
            os.fsync(file.fileno())
        digest = hashing.sha256.hexdigest()

    write_atomic(path, write)
    write_atomic(checksum_path(path), lambda temporary: temporary.write_text(digest + "\n"))


def rotated(run_dir: Path, keep: int) -> list[Path]:
    """The names of a run's kept checkpoints, newest first: checkpoint.pt, checkpoint.1.pt, …"""
    return [run_dir / NEWEST] + [run_dir / f"checkpoint.{i}.pt" for i in range(1, keep)]


def save_rotating(state: dict[str, Any], run_dir: Path, keep: int) -> Path:
    """``state`` as the run's newest checkpoint, the ``keep − 1`` before it shifted up by
    one and older ones dropped. The new one is complete before any old one moves."""
    names = rotated(run_dir, max(keep, 1))
    incoming = run_dir / f".incoming-{os.getpid()}.pt"
    try:
        save_checksummed(state, incoming)
        for older, newer in zip(reversed(names[1:]), reversed(names[:-1]), strict=True):
            for a, b in ((newer, older), (checksum_path(newer), checksum_path(older))):
                if a.exists():
                    os.replace(a, b)
        os.replace(incoming, names[0])
        os.replace(checksum_path(incoming), checksum_path(names[0]))
    finally:
        incoming.unlink(missing_ok=True)
        checksum_path(incoming).unlink(missing_ok=True)
    return names[0]


def verify(path: Path) -> None:
    """``DamagedCheckpoint`` unless ``path``'s bytes match its ``.sha256`` (a checkpoint
    written before checksums, with none beside it, passes)."""
    recorded = checksum_path(path)
    if not recorded.exists():
        return
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as file:
            for block in iter(lambda: file.read(1 << 22), b""):
                digest.update(block)
        expected = recorded.read_text().strip()
    except OSError as error:
        raise DamagedCheckpoint(f"{path}: unreadable ({error.strerror or error})") from error
    if digest.hexdigest() != expected:
        raise DamagedCheckpoint(f"{path}: damaged (its bytes do not match {recorded.name})")


def load(path: Path) -> dict[str, Any]:
    """A verified checkpoint's contents (``DamagedCheckpoint`` for a damaged or foreign file)."""
    verify(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # torch.load raises many kinds on truncated or foreign files
        raise DamagedCheckpoint(f"{path}: not a readable checkpoint ({type(error).__name__})") from error
    if not isinstance(state, dict):
        raise DamagedCheckpoint(f"{path}: not a fastssl checkpoint")
    return state


def newest_intact(run_dir: Path, keep_looking: int = 100) -> tuple[Path | None, list[str]]:
    """The newest checkpoint of ``run_dir`` whose bytes match its checksum, and a line for
    every newer one skipped as damaged."""
    skipped = []
    for path in rotated(run_dir, keep_looking):
        if not path.exists():
            continue
        try:
            verify(path)
        except DamagedCheckpoint as error:
            skipped.append(f"skipped {error}")
            continue
        return path, skipped
    return None, skipped


def all_finite(tensors: Iterable[Tensor]) -> bool:
    """Whether every floating-point value of ``tensors`` is finite: checked on their device,
    read on the host once."""
    checks = [torch.isfinite(t).all() for t in tensors if t.is_floating_point()]
    return bool(torch.stack(checks).all()) if checks else True


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
