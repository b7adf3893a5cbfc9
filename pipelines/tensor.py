"""The ``tensor`` format: decoded uint8 pixels, resident on the training device.

On disk, per split: ``images.npy`` (N×H×W×3 uint8, memory-mappable), ``labels.npy``
(int64), ``indices.npy`` (int64 dataset indices) and ``files.txt`` (source paths). The
loader copies a split to the device once; every step gathers a batch by index and makes
its views there. H×W×3 storage read as N×3×H×W is exactly channels-last, so no layout copy
happens anywhere.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from pipelines.batch import ViewBatch
from pipelines.dataset import DatasetError, DatasetInfo, read_info
from pipelines.views import ViewRecipe

SPLIT_FILES = ("images.npy", "labels.npy", "indices.npy")


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_split(folder: Path, images: np.ndarray | None, labels: np.ndarray, files: list[str]) -> dict:
    """Write one split; returns its metadata entry (count and checksums).

    ``images`` None: ``folder/images.npy`` is already written (``tools/convert.py`` decodes
    straight into a memory-mapped file, so no second copy of the pixels is held)."""
    folder.mkdir(parents=True, exist_ok=True)
    if images is not None:
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] != 3:
            raise ValueError(f"{folder}: images must be N×H×W×3 uint8, not {images.dtype} {images.shape}")
        np.save(folder / "images.npy", images)
    count = len(np.load(folder / "images.npy", mmap_mode="r"))
    if count != len(labels) or count != len(files):
        raise ValueError(f"{folder}: {count} images, {len(labels)} labels, {len(files)} file names")
    np.save(folder / "labels.npy", np.asarray(labels, dtype=np.int64))
    np.save(folder / "indices.npy", np.arange(len(labels), dtype=np.int64))
    (folder / "files.txt").write_text("".join(f"{name}\n" for name in files))
    return {"count": len(labels), "sha256": {name: sha256(folder / name) for name in SPLIT_FILES}}


def read_split(info: DatasetInfo, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images N×H×W×3 uint8 memory-mapped, labels, indices) of one split."""
    if split not in info.splits:
        raise DatasetError(f"{info.root}: no split '{split}' (has {', '.join(info.splits)})")
    folder = info.root / split
    try:
        images = np.load(folder / "images.npy", mmap_mode="r")
        labels = np.load(folder / "labels.npy")
        indices = np.load(folder / "indices.npy")
    except (OSError, ValueError) as error:
        raise DatasetError(f"{folder}: unreadable split ({error})") from error
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (*info.image_size, 3):
        raise DatasetError(
            f"{folder}/images.npy: {images.dtype} {images.shape}, expected N×{info.image_size[0]}×"
            f"{info.image_size[1]}×3 uint8 (meta.json image_size)"
        )
    if labels.ndim != 1 or indices.ndim != 1:
        raise DatasetError(f"{folder}: labels.npy and indices.npy must be one-dimensional")
    if not len(images) == len(labels) == len(indices) == info.splits[split]["count"]:
        raise DatasetError(f"{folder}: split files disagree on the number of images")
    return images, labels, indices


class DeviceSplit:
    """One split's pixels, labels and indices as device tensors."""

    def __init__(self, info: DatasetInfo, split: str, device: torch.device) -> None:
        images, labels, indices = read_split(info, split)
        pixels = torch.from_numpy(np.array(images)).to(device)  # read once into memory
        self.images = pixels.permute(0, 3, 1, 2)  # N×3×H×W view, channels-last memory
        self.labels = torch.from_numpy(labels).to(device)
        self.indices = torch.from_numpy(indices).to(device)
        height, width = self.images.shape[-2:]
        self.sizes = torch.tensor([[height, width]]).expand(len(labels), 2)

    def __len__(self) -> int:
        return self.labels.shape[0]


def epoch_permutation(n: int, seed: int, epoch: int) -> Tensor:
    """The order of one epoch, the same on every rank and for every backend."""
    state = np.random.SeedSequence([seed, epoch]).generate_state(1)[0]
    return torch.randperm(n, generator=torch.Generator().manual_seed(int(state)))


class TensorLoader:
    """Yields ``ViewBatch`` es of the training split; ``batch_size`` is the global batch.

    Each of ``world`` ranks takes its contiguous share of every global batch, so one
    process and several see the same images per step. ``drop_last`` always: methods with
    in-batch negatives or batch statistics need full batches.
    """

    def __init__(
        self,
        root: Path,
        recipe: ViewRecipe,
        batch_size: int,
        device: torch.device,
        seed: int = 0,
        rank: int = 0,
        world: int = 1,
    ) -> None:
        self.info = read_info(root)
        if batch_size % world:
            raise ValueError(f"batch size {batch_size} is not divisible by {world} processes")
        self.recipe, self.batch_size, self.device = recipe, batch_size, device
        self.seed, self.rank, self.world = seed, rank, world
        self.train = DeviceSplit(self.info, self.info.train_split, device)
        if len(self.train) < batch_size:
            raise ValueError(f"{root}: {len(self.train)} training images < batch size {batch_size}")
        # The same on every rank: each draws the parameters of the whole global batch.
        self.generator = torch.Generator().manual_seed(seed)
        self.epoch, self.step = 0, 0
        self._eval_splits: dict[str, DeviceSplit] = {}

    def __len__(self) -> int:
        return len(self.train) // self.batch_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch, self.step = epoch, 0

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "step": self.step, "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.step = state["epoch"], state["step"]
        self.generator.set_state(state["generator"])

    def __iter__(self) -> Iterator[ViewBatch]:
        order = epoch_permutation(len(self.train), self.seed, self.epoch)
        local = self.batch_size // self.world
        while self.step < len(self):
            start = self.step * self.batch_size + self.rank * local
            chosen = order[start : start + local]
            self.step += 1  # a checkpoint taken after this batch resumes at the next
            yield self._make_batch(chosen, self.rank * local)

    def _make_batch(self, chosen: Tensor, offset: int) -> ViewBatch:
        sizes = self.train.sizes[: self.batch_size]  # of the global batch (all equal here)
        index = chosen.to(self.device, non_blocking=True)
        images = self.train.images[index]
        views, meta = self.recipe(images, sizes, self.generator, offset)
        return ViewBatch(views, self.train.indices[index], self.train.labels[index], meta)

    def eval_loader(self, split: str, batch_size: int) -> Iterator[ViewBatch]:
        """Deterministic, un-augmented, normalised batches of this rank's shard of a split.

        Every rank gets ⌈n/world⌉ images (the last ones repeated to even the shards);
        gather and index by ``indices`` to undo the sharding.
        """
        if split not in self._eval_splits:
            data = self.train if split == self.info.train_split else None
            self._eval_splits[split] = data or DeviceSplit(self.info, split, self.device)
        data = self._eval_splits[split]
        mean, std = self.recipe.mean_std
        mean_t = torch.tensor(mean, device=self.device)[None, :, None, None]
        std_t = torch.tensor(std, device=self.device)[None, :, None, None]
        shard = -(-len(data) // self.world)
        positions = torch.arange(self.rank * shard, (self.rank + 1) * shard).clamp(max=len(data) - 1)
        for start in range(0, shard, batch_size):
            index = positions[start : start + batch_size].to(self.device)
            images = (data.images[index].float() / 255 - mean_t) / std_t
            images = images.contiguous(memory_format=torch.channels_last)
            yield ViewBatch({"eval": images}, data.indices[index], data.labels[index], {})
