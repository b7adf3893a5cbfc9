"""Online linear probe (solo-learn's habit): a linear classifier trained alongside the
method on detached backbone features, so it tracks linear separability for free."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class OnlineProbe(nn.Module):
    def __init__(self, feature_dim: int, num_classes: int) -> None:
        super().__init__()
        self.classifier = nn.Linear(feature_dim, num_classes)

    def forward(self, features: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """(cross-entropy, accuracy in percent) on detached features; labels repeat per view."""
        views = features.shape[0] // labels.shape[0]
        labels = labels.repeat(views)
        logits = self.classifier(features.detach().float())
        accuracy = 100.0 * (logits.argmax(1) == labels).float().mean()
        return F.cross_entropy(logits, labels), accuracy.detach()

    @torch.no_grad()
    def accuracy(self, features: Tensor, labels: Tensor) -> float:
        predicted = self.classifier(features.float()).argmax(1)
        return 100.0 * (predicted == labels).float().mean().item()
