import math

import torch

from fastssl.eval.knn import knn_accuracy, knn_predict


def clusters(n_per_class, classes, dim, spread, generator):
    centres = torch.randn(classes, dim, generator=generator) * 5
    labels = torch.arange(classes).repeat_interleave(n_per_class)
    return centres[labels] + spread * torch.randn(len(labels), dim, generator=generator), labels


def test_separable_clusters_are_classified_perfectly():
    g = torch.Generator().manual_seed(0)
    bank, bank_labels = clusters(100, 10, 32, 0.3, g)
    test, test_labels = bank[::7] + 0.05 * torch.randn(len(bank[::7]), 32, generator=g), bank_labels[::7]
    assert knn_accuracy(test, test_labels, bank, bank_labels, 10, k=200, temperature=0.1) > 99.0


def test_random_labels_give_chance():
    g = torch.Generator().manual_seed(1)
    bank = torch.randn(4000, 16, generator=g)
    bank_labels = torch.randint(0, 10, (4000,), generator=g)
    test = torch.randn(2000, 16, generator=g)
    test_labels = torch.randint(0, 10, (2000,), generator=g)
    accuracy = knn_accuracy(test, test_labels, bank, bank_labels, 10)
    standard_error = 100 * math.sqrt(0.1 * 0.9 / 2000)
    assert abs(accuracy - 10.0) < 4 * standard_error


def test_weighted_vote_and_chunking():
    # Two neighbours of class 1 close by outweigh three of class 0 further away.
    bank = torch.tensor([[1.0, 0.0], [0.99, 0.14], [0.0, 1.0], [0.1, 1.0], [-0.1, 1.0]])
    labels = torch.tensor([1, 1, 0, 0, 0])
    query = torch.tensor([[1.0, 0.05]])
    assert knn_predict(query, bank, labels, 2, k=5, temperature=0.1).item() == 1
    many = torch.randn(50, 2)
    torch.testing.assert_close(
        knn_predict(many, bank, labels, 2, k=3, chunk=7), knn_predict(many, bank, labels, 2, k=3, chunk=1000)
    )
