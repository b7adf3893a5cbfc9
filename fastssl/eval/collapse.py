"""Collapse diagnostics of an embedding batch, logged during training.

* ``embedding_std``: the mean over dimensions of the per-dimension standard deviation of
  the L2-normalised embeddings (SimSiam, Chen & He 2021, §4.1): about 1/√d for embeddings
  spread over the sphere, 0 when every image maps to one point.
* ``effective_rank``: exp of the entropy of the normalised singular values of the batch
  (Roy & Vetterli 2007; RankMe, Garrido et al. 2023): from 1 (complete or dimensional
  collapse onto one direction) up to min(N, d).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


@torch.no_grad()
def collapse_metrics(embedding: Tensor) -> dict[str, Tensor]:
    z = torch.nan_to_num(embedding.float())  # a diverged step is reported by its loss, not here
    std = F.normalize(z, dim=1).std(0).mean()
    singular = torch.linalg.svdvals(z)
    p = singular / singular.sum().clamp(min=1e-12)
    entropy = -(p * torch.log(p.clamp(min=1e-12))).sum()
    return {"embedding_std": std, "effective_rank": entropy.exp()}
