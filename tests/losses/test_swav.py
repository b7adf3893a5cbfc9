"""SwAV's Sinkhorn–Knopp codes and swapped prediction against plain transcriptions of the
paper (Caron et al., 2020, Eq. 1–3 and the appendix's algorithm), and the codes of two
processes against those of one."""

import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import torch
import torch.nn.functional as F

from fastssl.losses.swav import sinkhorn_knopp, swapped_prediction

ROOT = Path(__file__).resolve().parents[2]


def cosine_scores(samples, prototypes, dim=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = F.normalize(torch.randn(samples, dim, generator=g), dim=1)
    c = F.normalize(torch.randn(prototypes, dim, generator=g), dim=1)
    return z @ c.T


def paper_sinkhorn(scores, epsilon, iterations):
    """The appendix's algorithm, line by line, in float64."""
    Q = torch.exp(scores.double() / epsilon).T  # K×B
    Q /= torch.sum(Q)
    K, B = Q.shape
    r, c = torch.ones(K, dtype=torch.float64) / K, torch.ones(B, dtype=torch.float64) / B
    for _ in range(iterations):
        u = torch.sum(Q, dim=1)
        Q *= (r / u).unsqueeze(1)
        Q *= (c / torch.sum(Q, dim=0)).unsqueeze(0)
    return (Q / torch.sum(Q, dim=0, keepdim=True)).T


def test_codes_match_the_papers_algorithm():
    scores = cosine_scores(24, 10)
    for iterations in (1, 3, 10):
        torch.testing.assert_close(sinkhorn_knopp(scores, 0.05, iterations).double(),
                                   paper_sinkhorn(scores, 0.05, iterations), rtol=1e-5, atol=1e-6)


def test_codes_are_doubly_stochastic():
    b, k = 24, 10
    scores = cosine_scores(b, k, seed=1)
    # Every iteration ends with the samples' normalisation: Q = codesᵀ/B has columns of 1/B.
    q = sinkhorn_knopp(scores, 0.05, 3).T / b
    torch.testing.assert_close(q.sum(0), torch.full((b,), 1 / b), rtol=0, atol=1e-5)
    # The prototypes' marginal 1/K holds in the limit of many iterations.
    q = sinkhorn_knopp(scores, 0.05, 500).T / b
    torch.testing.assert_close(q.sum(1), torch.full((k,), 1 / k), rtol=0, atol=1e-5)
    torch.testing.assert_close(q.sum(0), torch.full((b,), 1 / b), rtol=0, atol=1e-5)
    assert (q >= 0).all()


def test_codes_do_not_overflow_with_a_small_epsilon():
    scores = cosine_scores(16, 6, seed=2)
    scores[3, 2] = 0.99  # a sample next to a prototype
    assert not torch.isfinite(torch.exp(scores / 0.01)).all()  # fp32 overflows past 88
    codes = sinkhorn_knopp(scores, 0.01, 3)
    torch.testing.assert_close(codes.double(), paper_sinkhorn(scores, 0.01, 3), rtol=1e-5, atol=1e-6)


def test_codes_of_low_precision_scores_are_fp32():
    assert sinkhorn_knopp(cosine_scores(8, 4).bfloat16()).dtype == torch.float32


WORKER = textwrap.dedent("""
    import sys, torch, torch.distributed as dist
    sys.path.insert(0, sys.argv[1])
    from fastssl.losses.swav import sinkhorn_knopp
    dist.init_process_group("gloo")
    scores = torch.load(sys.argv[2])
    share = scores.tensor_split(dist.get_world_size())[dist.get_rank()]
    torch.save(sinkhorn_knopp(share, 0.05, 3), sys.argv[3] + f"/codes{dist.get_rank()}.pt")
    dist.destroy_process_group()
""")


def test_two_processes_give_the_codes_of_one(tmp_path):
    """Each process holds half of the samples (unequal halves, as with a queue share)."""
    scores = cosine_scores(23, 10, seed=3)
    torch.save(scores, tmp_path / "scores.pt")
    (tmp_path / "worker.py").write_text(WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(tmp_path / "worker.py"), str(ROOT), str(tmp_path / "scores.pt"), str(tmp_path)]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    together = torch.cat([torch.load(tmp_path / f"codes{r}.pt") for r in range(2)])
    torch.testing.assert_close(together, sinkhorn_knopp(scores, 0.05, 3), rtol=1e-5, atol=1e-7)


def paper_swapped_prediction(scores, codes, tau):
    """Eq. 1–2 with explicit sums: every code view against every other view, per image."""
    views, n, k = scores.shape
    total, pairs = 0.0, 0
    for s in range(codes.shape[0]):
        for t in range(views):
            if t == s:
                continue
            loss = 0.0
            for i in range(n):
                denominator = sum(torch.exp(scores[t, i, j] / tau) for j in range(k))
                loss = loss - sum(codes[s, i, j] * torch.log(torch.exp(scores[t, i, j] / tau) / denominator)
                                  for j in range(k))
            total, pairs = total + loss / n, pairs + 1
    return total / pairs


def test_swapped_prediction_matches_equations_1_and_2():
    g = torch.Generator().manual_seed(4)
    for views in (2, 4):  # two global views, or two plus two local ones
        scores = torch.randn(views, 3, 5, generator=g, dtype=torch.float64).requires_grad_()
        codes = torch.softmax(torch.randn(2, 3, 5, generator=g, dtype=torch.float64), dim=2)
        loss = swapped_prediction(scores, codes, 0.1)
        expected = paper_swapped_prediction(scores, codes, 0.1)
        assert abs(loss.item() - expected.item()) < 1e-5
        (grad,) = torch.autograd.grad(loss, scores)
        (expected_grad,) = torch.autograd.grad(expected, scores)
        torch.testing.assert_close(grad.double(), expected_grad, rtol=1e-4, atol=1e-6)


def test_swapped_prediction_is_the_mean_of_the_two_swaps():
    g = torch.Generator().manual_seed(5)
    scores = torch.randn(2, 6, 7, generator=g)
    codes = torch.softmax(torch.randn(2, 6, 7, generator=g), dim=2)
    def one_way(a, b):
        return -(codes[a] * F.log_softmax(scores[b] / 0.1, dim=1)).sum(1).mean()
    torch.testing.assert_close(swapped_prediction(scores, codes, 0.1), 0.5 * (one_way(0, 1) + one_way(1, 0)))
    assert math.isfinite(swapped_prediction(scores.bfloat16(), codes, 0.1).item())
