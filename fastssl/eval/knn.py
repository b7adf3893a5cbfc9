"""Weighted k-nearest-neighbour monitor (Wu et al., 2018, as in the MoCo CIFAR demo and
Mini-SSL): cosine similarity to a bank of training features, the k nearest vote for their
class with weight exp(sim/τ), the heaviest class wins. Runs on the device, in chunks."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import Tensor

from fastssl.distributed import gather
from pipelines.batch import ViewBatch


@torch.no_grad()
def extract_features(
    network: Callable[[Tensor], Tensor], batches: Iterable[ViewBatch], count: int
) -> tuple[Tensor, Tensor]:
    """Features (fp32, count×D) and labels of a split, gathered from every process's shard."""
    features: Tensor | None = None
    labels: Tensor | None = None
    for batch in batches:
        out = network(batch.views["eval"]).float()
        out, index, label = gather(out), gather(batch.indices), gather(batch.labels)  # type: ignore[arg-type]
        if features is None:
            features = out.new_zeros(count, out.shape[1])
            labels = label.new_zeros(count)
        features.index_copy_(0, index, out)
        labels.index_copy_(0, index, label)  # type: ignore[union-attr]
    assert features is not None and labels is not None, "empty split"
    return features, labels


@torch.no_grad()
def knn_predict(
    queries: Tensor,
    bank: Tensor,
    bank_labels: Tensor,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.1,
    chunk: int = 1024,
) -> Tensor:
    """Predicted class of each query. Features need not be normalised."""
    bank = F.normalize(bank.float(), dim=1)
    k = min(k, len(bank))
    predictions = []
    for start in range(0, len(queries), chunk):
        q = F.normalize(queries[start : start + chunk].float(), dim=1)
        similarity, neighbour = (q @ bank.T).topk(k, dim=1)
        weights = (similarity / temperature).exp()
        votes = torch.zeros(len(q), num_classes, device=q.device)
        votes.scatter_add_(1, bank_labels[neighbour], weights)
        predictions.append(votes.argmax(1))
    return torch.cat(predictions)


def knn_accuracy(
    test: Tensor, test_labels: Tensor, bank: Tensor, bank_labels: Tensor, num_classes: int,
    k: int = 200, temperature: float = 0.1,
) -> float:
    """Top-1 accuracy in percent; bank entries labelled −1 (unlabelled images) are left out."""
    labelled = bank_labels >= 0
    bank, bank_labels = bank[labelled], bank_labels[labelled]
    predicted = knn_predict(test, bank, bank_labels, num_classes, k, temperature)
    return 100.0 * (predicted == test_labels).float().mean().item()
