import torch

from fastssl.eval.collapse import collapse_metrics


def test_collapsed_embeddings_score_low_and_spread_ones_high():
    torch.manual_seed(0)
    spread = collapse_metrics(torch.randn(256, 64))
    assert abs(spread["embedding_std"].item() - 64**-0.5) < 0.01
    assert spread["effective_rank"].item() > 50
    collapsed = collapse_metrics(torch.ones(256, 64) + 1e-6 * torch.randn(256, 64))
    assert collapsed["embedding_std"].item() < 1e-4 and collapsed["effective_rank"].item() < 1.5
    # dimensional collapse: every embedding on one of 3 directions
    low_rank = collapse_metrics(torch.randn(256, 3) @ torch.randn(3, 64))
    assert low_rank["effective_rank"].item() < 3.01
