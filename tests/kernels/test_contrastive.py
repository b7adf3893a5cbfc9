"""The three log-sum-exp implementations agree in value and gradient; the fused Triton
kernels run under TRITON_INTERPRET=1 on a CPU (set by tests/conftest.py) at tiny sizes,
natively on a GPU (``-m gpu``)."""

import pytest
import torch
import torch.nn.functional as F

from fastssl.kernels.contrastive import chunked_lse, fused_available, fused_lse, plain_lse
from fastssl.losses.infonce import batch_info_nce, nt_xent, queue_info_nce

CASES = {"plain": (False, False), "extra": (True, False), "exclude": (False, True), "both": (True, True)}


def inputs(n, m, d, device="cpu", seed=0):
    g = torch.Generator().manual_seed(seed)
    q = F.normalize(torch.randn(n, d, generator=g), dim=1).to(device).requires_grad_()
    c = F.normalize(torch.randn(m, d, generator=g), dim=1).to(device).requires_grad_()
    extra = (torch.randn(n, generator=g) * 3).to(device).requires_grad_()
    exclude = torch.randint(0, m, (n,), generator=g).to(device)
    return q, c, extra, exclude


def value_and_grads(function, q, c, extra, exclude, upstream):
    value = function(q, c, 0.2, extra, exclude)
    wrt = [q, c] + ([extra] if extra is not None else [])
    return value, torch.autograd.grad(value, wrt, upstream)


def assert_same(implementation, n, m, d, case, device="cpu", atol=1e-5, grad_error=None):
    """Values within ``atol``; gradients elementwise within ``atol`` and 1e-4 relative, or,
    with ``grad_error``, within that relative error in norm (‖got − want‖ / ‖want‖)."""
    q, c, extra, exclude = inputs(n, m, d, device)
    use_extra, use_exclude = CASES[case]
    extra, exclude = (extra if use_extra else None), (exclude if use_exclude else None)
    upstream = torch.randn(n, generator=torch.Generator().manual_seed(9)).to(device)
    expected, expected_grads = value_and_grads(plain_lse, q, c, extra, exclude, upstream)
    value, grads = value_and_grads(implementation, q, c, extra, exclude, upstream)
    torch.testing.assert_close(value, expected, atol=atol, rtol=1e-5)
    for got, want in zip(grads, expected_grads, strict=True):
        if grad_error is None:
            torch.testing.assert_close(got, want, atol=atol, rtol=1e-4)
        else:
            assert ((got - want).norm() / want.norm()).item() < grad_error


@pytest.mark.parametrize("case", CASES)
def test_chunked_matches_plain(case):
    assert_same(lambda *a: chunked_lse(*a, chunk=7), 12, 45, 16, case)


@pytest.mark.parametrize("case", CASES)
def test_fused_kernels_match_plain_under_the_interpreter(case):
    q = torch.zeros(1, 16)
    if not fused_available(q):
        pytest.skip("Triton is not installed")
    # 70 candidates cross a 64-wide tile; 20 dimensions pad to a 32-wide one
    assert_same(fused_lse, 9, 70, 20, case)


def transcribed_queue_loss(q, k, queue, tau):
    q, k, queue = (F.normalize(x.double(), dim=1) for x in (q, k, queue))
    total = 0.0
    for i in range(len(q)):
        positive = torch.exp(q[i] @ k[i] / tau)
        total = total - torch.log(positive / (positive + sum(torch.exp(q[i] @ n / tau) for n in queue)))
    return total / len(q)


@pytest.mark.parametrize("backend", ["plain", "chunked", "fused"])
def test_every_backend_of_the_losses_matches_the_equations(backend):
    if backend == "fused" and not fused_available(torch.zeros(1, 8)):
        pytest.skip("Triton is not installed")
    g = torch.Generator().manual_seed(3)
    q, k, queue = (torch.randn(n, 8, generator=g, requires_grad=True) for n in (6, 6, 20))
    loss = queue_info_nce(q, k, queue, 0.2, backend=backend)
    expected = transcribed_queue_loss(q, k, queue, 0.2)
    torch.testing.assert_close(loss.double(), expected, atol=1e-5, rtol=0)
    grads = torch.autograd.grad(loss, (q, k, queue))
    for got, want in zip(grads, torch.autograd.grad(expected, (q, k, queue)), strict=True):
        torch.testing.assert_close(got.double(), want.double(), atol=1e-5, rtol=1e-4)
    z = torch.randn(10, 8, generator=g)
    index = torch.arange(10)
    partner = torch.cat([index[5:], index[:5]])
    torch.testing.assert_close(nt_xent(z, z, index, partner, 0.5, backend=backend),
                               nt_xent(z, z, index, partner, 0.5, backend="plain"))
    torch.testing.assert_close(batch_info_nce(z[:5], z[5:], 0.2, backend=backend),
                               batch_info_nce(z[:5], z[5:], 0.2, backend="plain"))


def test_chunked_keeps_at_most_one_chunk_of_logits_for_backward():
    q, c, extra, _ = inputs(64, 4096, 32)
    saved = []

    def pack(tensor):
        saved.append(tensor.numel())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        chunked_lse(q, c, 0.2, extra, chunk=256)
    assert max(saved) < 64 * 4096  # the inputs and the N-vector only, never the N×M logits
    saved.clear()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        plain_lse(q, c, 0.2, extra)
    assert max(saved) >= 64 * 4096


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("case", CASES)
def test_fused_kernels_match_plain_on_the_gpu(case):
    # TF32 dots against the reference's fp32: on the CPU, truncating q and c to TF32 moves
    # these LSE values by ≤ 1.6e-4 and the gradients by 1e-3 in relative norm; one candidate
    # tile of 64 left out would move them by 0.013 and 0.1.
    assert_same(fused_lse, 300, 5000, 128, case, device="cuda", atol=1e-3, grad_error=5e-3)
