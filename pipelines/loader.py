"""The loader every format shares: order, sharding, resumable state and evaluation batches.

A format supplies only a ``Split``: how many images, their sizes, and ``fetch(index)`` →
uint8 pixels on the training device (padded to the largest image of the batch). The order
comes from one fastssl permutation per epoch, so every backend yields the same images in
the same steps, and a checkpoint taken after step s resumes at s+1 with the same views.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from pipelines.augment import CropParams, Normalize, RandomResizedCrop
from pipelines.batch import ViewBatch
from pipelines.dataset import DatasetError, read_info
from pipelines.formats import open_split
from pipelines.views import ViewRecipe

_WARNED_UPSAMPLED: set[Path] = set()  # data sets whose upsampled views were warned about


class Split(Protocol):
    labels: Tensor  # on the device
    indices: Tensor  # on the device
    sizes: Tensor  # N×2 (height, width), on the CPU

    def __len__(self) -> int: ...

    def fetch(self, index: Tensor) -> Tensor:
        """uint8 B×3×H×W on the device for the images at ``index`` (CPU int64),
        zero-padded to the batch's largest height and width."""
        ...


def stream(split: Split, batches: list[Tensor]) -> Iterator[Tensor]:
    """The pixels of each batch of indices in turn: the split's own ``stream`` where it has
    one (a backend with a pipeline of its own, e.g. FFCV, reads a whole epoch's order at
    once), else one ``fetch`` per batch."""
    own = getattr(split, "stream", None)
    return own(batches) if own is not None else map(split.fetch, batches)


def epoch_permutation(n: int, seed: int, epoch: int) -> Tensor:
    """The order of one epoch, the same on every rank and for every backend."""
    state = np.random.SeedSequence([seed, epoch]).generate_state(1)[0]
    return torch.randperm(n, generator=torch.Generator().manual_seed(int(state)))


def centre_square(size: int) -> RandomResizedCrop:
    """The evaluation view: the largest centred square, resized to ``size`` (identity for
    square images of that size)."""
    return RandomResizedCrop(size)


def centre_square_params(sizes: Tensor) -> CropParams:
    side = sizes.min(1).values
    top = torch.div(sizes[:, 0] - side, 2, rounding_mode="floor")
    left = torch.div(sizes[:, 1] - side, 2, rounding_mode="floor")
    return CropParams(torch.stack([top, left, side, side], 1).long())


class ConcatSplit:
    """Several splits as one (STL-10's labelled and unlabelled images trained on together):
    indices run on from one part to the next, labels keep their values (−1 = unlabelled)."""

    def __init__(self, parts: list[Split]) -> None:
        self.parts = parts
        self.starts = torch.tensor([0] + [len(p) for p in parts]).cumsum(0)
        self.labels = torch.cat([p.labels for p in parts])
        self.indices = torch.cat([p.indices + int(start) for p, start in zip(parts, self.starts, strict=False)])
        self.sizes = torch.cat([p.sizes for p in parts])

    def __len__(self) -> int:
        return int(self.starts[-1])

    def fetch(self, index: Tensor) -> Tensor:
        part_of = torch.bucketize(index, self.starts[1:], right=True)
        height, width = (int(v) for v in self.sizes[index].max(0).values)
        batch = None
        for p, part in enumerate(self.parts):
            rows = (part_of == p).nonzero().squeeze(1)
            if len(rows) == 0:
                continue
            pixels = part.fetch(index[rows] - self.starts[p])
            if batch is None:
                batch = pixels.new_zeros(len(index), 3, height, width).contiguous(memory_format=torch.channels_last)
            batch[rows.to(pixels.device), :, : pixels.shape[2], : pixels.shape[3]] = pixels
        return batch  # type: ignore[return-value]


class Loader:
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
        splits: tuple[str, ...] = ("train",),
        eval_size: int | None = None,
        upsampled: str = "",
    ) -> None:
        """``eval_size``: the side of the evaluation images (default: the first view's);
        ``upsampled``: why views larger than the images are meant (the warning then says so)."""
        self.info = read_info(root)
        self.eval_size = eval_size
        if batch_size % world:
            raise ValueError(f"batch size {batch_size} is not divisible by {world} processes")
        self.recipe, self.batch_size, self.device = recipe, batch_size, device
        self.seed, self.rank, self.world = seed, rank, world
        self._warn_if_upsampled(root, recipe, rank, upsampled)
        for name in splits:
            if name not in self.info.splits:
                raise DatasetError(f"{root}: no split '{name}' to train on (has {', '.join(self.info.splits)})")
        parts = [open_split(self.info, name, device) for name in splits]
        self.train = parts[0] if len(parts) == 1 else ConcatSplit(parts)
        if len(self.train) < batch_size:
            raise ValueError(f"{root}: {len(self.train)} training images < batch size {batch_size}")
        # The same on every rank: each draws the parameters of the whole global batch.
        self.generator = torch.Generator().manual_seed(seed)
        self.epoch, self.step = 0, 0
        self.bags: Tensor | None = None  # with_companions
        self._eval_splits: dict[str, Split] = {self.info.train_split: parts[0]} if splits[0] == "train" else {}
        for name in (self.info.train_split, self.info.eval_split):  # opened now: a damaged one fails before training
            if name not in self._eval_splits:
                self._eval_splits[name] = open_split(self.info, name, device)

    def _warn_if_upsampled(self, root: Path, recipe: ViewRecipe, rank: int, upsampled: str) -> None:
        """Views larger than the stored images are upsampled crops (a preset for larger images,
        e.g. imagenette-128 on data converted at 64 px): it trains, but not on what the preset
        means — unless the preset means it (``upsampled``: ImageNette v2-160 at 224 px). Once
        per process and data set (training's loader and the probes' say the same thing) and only
        on rank 0."""
        shorter = min(self.info.image_size)
        larger = {name: group.config.size for name, group in recipe.groups.items() if group.config.size > shorter}
        if not larger or rank != 0 or root.resolve() in _WARNED_UPSAMPLED:
            return
        _WARNED_UPSAMPLED.add(root.resolve())
        sizes = ", ".join(f"{name} {size} px" for name, size in larger.items())
        height, width = self.info.image_size
        advice = (f"on purpose: {upsampled}" if upsampled
                  else "convert the data at the preset's size, or choose a preset for it")
        warnings.warn(f"{root}: views ({sizes}) larger than the stored {height}×{width} images: training on "
                      f"upsampled views ({advice})", stacklevel=2)

    def with_companions(self, bags: Tensor) -> None:
        """From now on every batch is half anchors and half companions: each anchor (in the
        epoch's order, every image once) brings one image drawn from its row of ``bags``
        (n×K indices into the training split; BINGO's bags of neighbours). Each process's
        share of a batch holds its anchors, then their companions in the same order."""
        if self.batch_size % (2 * self.world):
            raise ValueError(f"batch size {self.batch_size}: anchors and companions need an even share per process")
        if bags.shape[0] != len(self.train):
            raise ValueError(f"{bags.shape[0]} bags for {len(self.train)} training images")
        self.bags = bags.cpu()

    def __len__(self) -> int:
        per_batch = self.batch_size // 2 if self.bags is not None else self.batch_size
        return len(self.train) // per_batch

    def set_epoch(self, epoch: int) -> None:
        self.epoch, self.step = epoch, 0

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "step": self.step, "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.step = state["epoch"], state["step"]
        self.generator.set_state(state["generator"])

    def __iter__(self) -> Iterator[ViewBatch]:
        order = epoch_permutation(len(self.train), self.seed, self.epoch)
        offset = self.rank * (self.batch_size // self.world)
        if self.bags is None:
            batches = [order[s * self.batch_size : (s + 1) * self.batch_size] for s in range(self.step, len(self))]
        else:
            batches = self._with_companions(order, self.bags)
        shares = [batch[offset : offset + self.batch_size // self.world] for batch in batches]
        for batch, share, images in zip(batches, shares, stream(self.train, shares), strict=True):
            self.step += 1  # a checkpoint taken after this batch resumes at the next
            views, meta = self.recipe(images, self.train.sizes[batch], self.generator, offset)
            index = share.to(self.device, non_blocking=True)
            yield ViewBatch(views, self.train.indices[index], self.train.labels[index], meta)

    def _with_companions(self, order: Tensor, bags: Tensor) -> list[Tensor]:
        """The remaining batches of the epoch, each process's share anchors then companions.
        The companions of a step are drawn when the step is (from a generator seeded by the
        seed, epoch and step), so a resumed epoch draws the ones it would have."""
        anchors_per_batch, share = self.batch_size // 2, self.batch_size // (2 * self.world)
        batches = []
        for step in range(self.step, len(self)):
            anchors = order[step * anchors_per_batch : (step + 1) * anchors_per_batch]
            draw = torch.Generator().manual_seed(int(np.random.SeedSequence([self.seed, self.epoch, step])
                                                     .generate_state(1)[0]))
            companions = bags[anchors, torch.randint(bags.shape[1], (len(anchors),), generator=draw)]
            batches.append(torch.cat([torch.cat([a, c]) for a, c in zip(anchors.split(share), companions.split(share),
                                                                          strict=True)]))
        return batches

    def eval_loader(self, split: str, batch_size: int) -> Iterator[ViewBatch]:
        """Deterministic, un-augmented, normalised batches of this rank's shard of a split:
        the centred square of each image at ``eval_size`` (default: the first view's size).

        Every rank gets ⌈n/world⌉ images (the last ones repeated to even the shards);
        gather and index by ``indices`` to undo the sharding.
        """
        if split not in self._eval_splits:
            self._eval_splits[split] = open_split(self.info, split, self.device)
        data = self._eval_splits[split]
        first = self.recipe.first
        crop, normalize = centre_square(self.eval_size or first.size), Normalize(first.mean, first.std)
        shard = -(-len(data) // self.world)
        positions = torch.arange(self.rank * shard, (self.rank + 1) * shard).clamp(max=len(data) - 1)
        for start in range(0, shard, batch_size):
            chosen = positions[start : start + batch_size]
            images = crop(data.fetch(chosen), centre_square_params(data.sizes[chosen]))
            index = chosen.to(self.device, non_blocking=True)
            yield ViewBatch({"eval": normalize(images)}, data.indices[index], data.labels[index], {})
