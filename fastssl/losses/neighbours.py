"""Losses that take their positives from a memory of past embeddings: NNCLR, MSF, SNCLR.

Each image's positives are the nearest neighbours, by cosine, of an embedding of one of
its views among the memory's rows. The search carries no gradient; every loss normalises
its inputs and upcasts them to fp32 (log-sum-exp over thousands of logits).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from fastssl.losses.infonce import unit
from fastssl.losses.precision import at_least_fp32


def _cosines(x: Tensor, rows: Tensor) -> Tensor:
    """cos(x_i, rows_ij) for N×D ``x`` and N×k×D ``rows``, elementwise so that it stays in
    fp32 under autocast (2 − 2·cos near 0 needs more than bf16's 8 bits)."""
    return (unit(x)[:, None] * unit(rows)).sum(-1)


@torch.no_grad()
def nearest_neighbours(query: Tensor, memory: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The ``k`` rows of ``memory`` (K×D) most cosine-similar to each row of ``query`` (N×D),
    most similar first: their indices (N×k) and the rows themselves (N×k×D), no gradient.

    The similarities are ranked in fp32 even under autocast: close neighbours' cosines near
    1 can differ by less than bf16's resolution there (2⁻⁸), which would tie or swap them."""
    with torch.autocast(query.device.type, enabled=False):
        similarity = unit(query) @ unit(memory).T
    indices = similarity.topk(k, dim=1).indices
    return indices, memory[indices]


def nnclr_loss(
    prediction: Tensor,
    neighbours: Tensor,
    all_predictions: Tensor,
    all_neighbours: Tensor,
    temperature: float,
    offset: int = 0,
) -> Tensor:
    """NNCLR (Dwibedi et al., 2021), Eq. 2 with its symmetrised term, and
    Mini-SSL's top-k extension: the nearest neighbour NN(z_i) of one view's projection
    stands in for it as the positive of the other view's prediction p_i,

        L_i  = −log exp(NN(z_i)·p_i/τ) / Σ_j exp(NN(z_i)·p_j/τ)      (neighbour as anchor)
        L'_i = −log exp(NN(z_i)·p_i/τ) / Σ_j exp(NN(z_j)·p_i/τ)      (prediction as anchor)

    loss = (mean L + mean L')/2. With k neighbours each neighbour is an anchor of its own
    (L averaged over the N·k of them), and L' sums the k positives' terms over a softmax
    across all N·k neighbours (Mini-SSL's multi-hot target, summed, not averaged).

    ``prediction``: n×D, this process's; ``neighbours``: n×k×D, row i those of image i;
    ``all_predictions`` (M×D) and ``all_neighbours`` (M×k×D): every process's, this
    process's rows starting at ``offset``. In one process they are the same tensors.
    """
    p, nn, all_p, all_nn = unit(prediction), unit(neighbours), unit(all_predictions), unit(all_neighbours)
    n, k, dim = nn.shape
    own = torch.arange(n, device=p.device) + offset
    # Neighbour as anchor: N·k rows, each picking its image's prediction out of all M.
    logits = at_least_fp32(nn.reshape(n * k, dim) @ all_p.T) / temperature
    neighbour_anchor = F.cross_entropy(logits, own.repeat_interleave(k))
    # Prediction as anchor: one softmax over all M·k neighbours, its own k summed.
    log_probs = F.log_softmax(at_least_fp32(p @ all_nn.reshape(-1, dim).T) / temperature, dim=1)
    prediction_anchor = -log_probs.view(n, -1, k)[torch.arange(n, device=p.device), own].sum(1).mean()
    return 0.5 * (neighbour_anchor + prediction_anchor)


def msf_loss(prediction: Tensor, target: Tensor, neighbours: Tensor) -> Tensor:
    """Mean Shift (Koohpayegani et al., 2021), the mean-shift loss, as Mini-SSL's MSF.py
    computes it: the online prediction p_i is pulled towards the target t_i and towards
    t_i's k nearest neighbours in the memory (squared distances of unit vectors),

        L = 1/N Σ_i 1/(k+1) Σ_{u ∈ {t_i} ∪ NN_k(t_i)} (2 − 2·cos(p_i, u)).

    ``prediction``, ``target``: N×D; ``neighbours``: N×k×D. (The official code counts the
    target among its own k neighbours, having enqueued it first: k targets, not k + 1.)
    """
    targets = torch.cat([at_least_fp32(target[:, None]), at_least_fp32(neighbours)], 1)  # the target first, as Mini-SSL
    return (2 - 2 * _cosines(prediction, targets)).mean()


def snclr_loss(
    prediction: Tensor, projection: Tensor, candidates: Tensor, temperature: float, offset: int = 0
) -> Tensor:
    """SNCLR (Ge et al., 2023), the soft-neighbour contrastive loss, as Mini-SSL's
    SNCLR.py computes it: the prediction p_i is contrasted against every image's target and
    that target's k neighbours,

        L_i = −Σ_{m, j} w_i(m, j) · log softmax_{m, j}(p_i·c_{m, j}/τ),

    where c_{m,0} is image m's target and c_{m,1..k} its neighbours. The weights are nonzero
    only on image i's own candidates: 1 for its target, and for its neighbours a softmax
    over j of cos(z_i, c_{i,j}), the cross-attention between the online projection z_i and
    each neighbour (with gradient, as in Mini-SSL and the official code). A row's weights
    sum to 2. Mean over the images.

    ``prediction``, ``projection``: n×D, this process's; ``candidates``: M×(1+k)×D, every
    process's targets with their neighbours, this process's rows starting at ``offset``.
    """
    p, c = unit(prediction), unit(candidates)
    n, dim = p.shape
    rows = torch.arange(n, device=p.device)
    # Positiveness of each own neighbour: the cross-attention softmax over its k cosines.
    attention = F.softmax(_cosines(projection, c[offset : offset + n, 1:]), dim=1)
    weights = torch.cat([torch.ones_like(attention[:, :1]), attention], 1)
    log_probs = F.log_softmax(at_least_fp32(p @ c.reshape(-1, dim).T) / temperature, dim=1)
    own = log_probs.view(n, -1, c.shape[1])[rows, rows + offset]  # image i's target and neighbours
    return -(weights * own).sum(1).mean()
