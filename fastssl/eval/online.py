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
        """(cross-entropy, accuracy in percent) on detached features; labels repeat per view.
        Images labelled −1 (unlabelled) are left out of both."""
        views = features.shape[0] // labels.shape[0]
        labels = labels.repeat(views)
        logits = self.classifier(features.detach().to(self.classifier.weight.dtype))
        labelled = (labels >= 0).float()
        correct = (logits.argmax(1) == labels).float() * labelled
        accuracy = 100.0 * correct.sum() / labelled.sum().clamp(min=1)
        loss = (F.cross_entropy(logits, labels.clamp(min=0), reduction="none") * labelled).sum()
        return loss / labelled.sum().clamp(min=1), accuracy.detach()

    @torch.no_grad()
    def accuracy(self, features: Tensor, labels: Tensor) -> float:
        predicted = self.classifier(features.to(self.classifier.weight.dtype)).argmax(1)
        return 100.0 * (predicted == labels).float().mean().item()
