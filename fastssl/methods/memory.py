"""A first-in-first-out memory of past embeddings: MoCo's queue of negatives, the support
set of NNCLR, MSF and SNCLR, the relation bank of ReSSL and SCE."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fastssl.distributed import gather
from fastssl.losses.precision import at_least_fp32


class FeatureQueue(nn.Module):
    """``size`` L2-normalised embeddings of dimension ``dim`` in a buffer (so it moves, saves
    and resumes with its method), started from random unit vectors as MoCo does.

    ``features`` is the memory as it stands; ``push`` adds this step's embeddings from
    every process (rank order), overwriting the oldest. Methods read the memory in the
    forward pass and push after the optimiser step, so both loss directions of a step
    see the memory as it was before it.
    """

    features: Tensor
    pointer: Tensor

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        self.register_buffer("features", F.normalize(torch.randn(size, dim), dim=1))
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long))

    def __len__(self) -> int:
        return self.features.shape[0]

    @torch.no_grad()
    def push(self, embeddings: Tensor) -> None:
        """Add this process's ``embeddings`` (N×dim; normalised here) and every other's."""
        new = gather(F.normalize(at_least_fp32(embeddings.detach()), dim=1))
        if len(new) > len(self):
            raise ValueError(f"{len(new)} embeddings per step do not fit a memory of {len(self)}")
        slots = (self.pointer + torch.arange(len(new), device=new.device)) % len(self)
        self.features.index_copy_(0, slots, new.to(self.features.dtype))
        self.pointer.copy_((self.pointer + len(new)) % len(self))
