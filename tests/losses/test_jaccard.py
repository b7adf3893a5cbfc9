"""The Jaccard InfoNCE against a loop-by-loop transcription of the author's formula."""

import torch

from fastssl.losses.infonce import queue_info_nce
from fastssl.losses.jaccard import jaccard_info_nce, jaccard_similarity


def unit(v):
    return v / torch.sqrt((v * v).sum())


def nce(scores, tau):
    """−log exp(x₊/τ) / Σ_j exp(x_j/τ), the positive first."""
    return -torch.log(torch.exp(scores[0] / tau) / sum(torch.exp(s / tau) for s in scores))


def jaccard_moco_eq(q, k, queue, tau, weights):
    """For each query and candidate c ∈ [k_i, queue]: S = 1 + cos(q_p, c_p),
    D = 2 − 2 cos(q_n, c_n), J = S/(S + D); then w_J·NCE(J) + w_p·NCE(cos_p) + w_n·NCE(cos_n)."""
    d = q.shape[1] // 2
    total = 0.0
    for i in range(len(q)):
        jaccard, cos_p, cos_n = [], [], []
        for c in [k[i]] + list(queue):
            cp = unit(q[i, :d]) @ unit(c[:d])
            cn = unit(q[i, d:]) @ unit(c[d:])
            s, dissimilarity = 1 + cp, 2 - 2 * cn
            jaccard.append(s / (s + dissimilarity))
            cos_p.append(cp)
            cos_n.append(cn)
        total = total + weights[0] * nce(jaccard, tau) + weights[1] * nce(cos_p, tau) + weights[2] * nce(cos_n, tau)
    return total / len(q)


def inputs(seed, n=4, k=6, d=3):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(n, 2 * d, generator=g, dtype=torch.float64, requires_grad=True)
    key = torch.randn(n, 2 * d, generator=g, dtype=torch.float64, requires_grad=True)
    return q, key, torch.randn(k, 2 * d, generator=g, dtype=torch.float64)


def test_jaccard_similarity_is_an_index():
    cos = torch.tensor([1.0, -1.0, 0.0, 1.0])
    torch.testing.assert_close(jaccard_similarity(cos, torch.tensor([1.0, 0.3, 0.0, 0.5])),
                               torch.tensor([1.0, 0.0, 1 / 3, 2 / 3]))
    g = torch.Generator().manual_seed(0)
    j = jaccard_similarity(torch.rand(100, generator=g) * 2 - 1, torch.rand(100, generator=g) * 2 - 1)
    assert (j >= 0).all() and (j <= 1).all()
    assert torch.isfinite(jaccard_similarity(torch.tensor(-1.0), torch.tensor(1.0)))  # S + D = 0


def test_jaccard_info_nce_matches_the_formula():
    for weights, tau in (((0.8, 0.1, 0.1), 0.1), ((1.0, 0.0, 0.0), 0.5), ((0.2, 0.5, 0.3), 0.06)):
        q, key, queue = inputs(1)
        loss = jaccard_info_nce(q, key, queue, tau, weights)
        reference = jaccard_moco_eq(q, key, queue, tau, weights)
        torch.testing.assert_close(loss.double(), reference, atol=1e-5, rtol=1e-5)
        grads = torch.autograd.grad(loss, [q, key])
        reference_grads = torch.autograd.grad(reference, [q, key])
        for grad, ref in zip(grads, reference_grads, strict=True):
            torch.testing.assert_close(grad.double(), ref, atol=1e-5, rtol=1e-4)


def test_each_head_alone_is_moco():
    q, key, queue = inputs(2, n=5, k=7, d=4)
    halves = [x.detach().chunk(2, dim=1) for x in (q, key, queue)]
    for head, weights in ((0, (0.0, 1.0, 0.0)), (1, (0.0, 0.0, 1.0))):
        expected = queue_info_nce(*(h[head] for h in halves), 0.2, "plain")
        torch.testing.assert_close(jaccard_info_nce(q.detach(), key.detach(), queue, 0.2, weights), expected)


def test_bf16_inputs_are_upcast():
    g = torch.Generator().manual_seed(3)
    q, key, queue = torch.randn(8, 32, generator=g), torch.randn(8, 32, generator=g), torch.randn(4096, 32, generator=g)
    full = jaccard_info_nce(q, key, queue, 0.1)
    half = jaccard_info_nce(q.bfloat16(), key.bfloat16(), queue.bfloat16(), 0.1)
    assert half.dtype == torch.float32
    assert abs(full.item() - half.item()) < 0.05 * full.item()
