"""The log-sum-exp at the heart of every InfoNCE loss, without the N×M logit matrix.

InfoNCE (van den Oord et al., 2018; MoCo Eq. 1; SimCLR Eq. 1) is, per query i,

    ℓ_i = LSE_i − s_i⁺,   LSE_i = log( e^{x_i} + Σ_{j ≠ x(i)} exp(q_i·c_j / τ) )

over M candidates c_j (in-batch keys, a queue of up to 65,536), with an optional extra logit
x_i per row (MoCo's positive, kept apart from the queue) and an optional excluded column
x(i) (NT-Xent's self-similarity). The positive's logit s_i⁺ is O(N·D) and stays in plain
PyTorch; only LSE needs the N×M similarities. Three implementations of it, equal in value
and gradient (tested):

* ``plain_lse``: the whole matrix, ``torch.logsumexp`` — the reference.
* ``chunked_lse``: a custom autograd function over column chunks with an online
  log-sum-exp forward and a backward that recomputes each chunk (memory O(N·chunk)), for
  any device.
* ``fused_lse``: Triton kernels that tile queries and candidates, keep the running max and
  sum in registers (the FlashAttention recipe applied to one softmax), and recompute the
  tiles in two backward kernels (dQ over candidate tiles, dC over query tiles). On CPU they
  run under ``TRITON_INTERPRET=1`` for the tests.

Gradients: with p_ij = exp(s_ij − LSE_i) and g_i = ∂L/∂LSE_i,
∂L/∂q_i = Σ_j g_i p_ij c_j / τ, ∂L/∂c_j = Σ_i g_i p_ij q_i / τ, ∂L/∂x_i = g_i e^{x_i − LSE_i}.
"""

from __future__ import annotations

import torch
from torch import Tensor

from fastssl.losses.precision import at_least_fp32

try:
    import triton
    import triton.language as tl
except ImportError:  # triton ships with CUDA builds of torch; CPU builds fall back to chunked
    triton = None

MAX_FUSED_DIM = 256  # a query tile holds whole embeddings in registers


def _masked_logits(q: Tensor, c: Tensor, scale: float, exclude: Tensor | None, start: int = 0) -> Tensor:
    """q·cᵀ·scale in fp32 (fp64 for fp64 inputs) for the columns start…start+len(c), the excluded one at −∞."""
    logits = (at_least_fp32(q) @ at_least_fp32(c).T) * scale
    if exclude is not None:
        columns = torch.arange(start, start + c.shape[0], device=q.device)
        logits = logits.masked_fill(exclude[:, None] == columns[None, :], float("-inf"))
    return logits


def plain_lse(q: Tensor, c: Tensor, temperature: float, extra: Tensor | None = None,
              exclude: Tensor | None = None) -> Tensor:
    """The reference: log-sum-exp of [extra, q·cᵀ/τ] per row over the whole N×M matrix."""
    logits = _masked_logits(q, c, 1.0 / temperature, exclude)
    if extra is not None:
        logits = torch.cat([at_least_fp32(extra)[:, None], logits], 1)
    return torch.logsumexp(logits, 1)


class _ChunkedLSE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, c, extra, exclude, scale, chunk):
        precision = torch.promote_types(q.dtype, torch.float32)
        running = (at_least_fp32(extra) if extra is not None
                   else torch.full((q.shape[0],), float("-inf"), dtype=precision, device=q.device))
        for start in range(0, c.shape[0], chunk):
            block = _masked_logits(q, c[start : start + chunk], scale, exclude, start)
            running = torch.logaddexp(running, torch.logsumexp(block, 1))
        ctx.save_for_backward(q, c, extra, exclude, running)
        ctx.scale, ctx.chunk = scale, chunk
        return running

    @staticmethod
    def backward(ctx, grad):
        q, c, extra, exclude, lse = ctx.saved_tensors
        scale, chunk = ctx.scale, ctx.chunk
        weight = at_least_fp32(grad)[:, None] * scale
        dq = torch.zeros(q.shape, dtype=weight.dtype, device=q.device)
        dc = torch.empty(c.shape, dtype=weight.dtype, device=c.device)
        for start in range(0, c.shape[0], chunk):
            block = c[start : start + chunk]
            p = torch.exp(_masked_logits(q, block, scale, exclude, start) - lse[:, None]) * weight
            dq += p @ at_least_fp32(block)
            dc[start : start + chunk] = p.T @ at_least_fp32(q)
        dextra = None
        if extra is not None:
            dextra = (at_least_fp32(grad) * torch.exp(at_least_fp32(extra) - lse)).to(extra.dtype)
        return dq.to(q.dtype), dc.to(c.dtype), dextra, None, None, None


def chunked_lse(q: Tensor, c: Tensor, temperature: float, extra: Tensor | None = None,
                exclude: Tensor | None = None, chunk: int = 4096) -> Tensor:
    """``plain_lse`` in column chunks: never more than N×chunk logits alive."""
    return _ChunkedLSE.apply(q, c, extra, exclude, 1.0 / temperature, chunk)


if triton is not None:
    # The similarity products on the tensor cores in TF32 (operands cut to a 10-bit mantissa,
    # fp32 accumulation; the log-sum-exp itself is fp32), also for fp32 inputs: "ieee" fp32
    # dots run on the CUDA cores and spill 7–33 KB of registers per program at these tiles,
    # "tf32x3" still 0.4–0.9 KB in the backward kernels, TF32 nothing (ptxas -v, sm_90,
    # Triton 3.6). Truncated to TF32, unit vectors' logits at τ = 0.2 move by at most 3.5e-3
    # (−2.6e-3 on average for aligned pairs: a 0.07 % change of τ), in an emulation on the CPU.
    _DOT_PRECISION = tl.constexpr("tf32")

    @triton.jit
    def _load_rows(PTR, rows, dims, count, d):
        """Rows ``rows`` (of ``count``) of a row-major ·×d matrix, zero-padded to the tile."""
        return tl.load(PTR + rows[:, None] * d + dims[None, :], mask=(rows[:, None] < count) & (dims[None, :] < d),
                       other=0.0)

    @triton.jit
    def _tile_scores(q, C, cols, dims, m, d, excluded, scale, HAS_EXCLUDE: tl.constexpr):
        """The candidate tile at ``cols``, the scaled scores q·cᵀ, and which of them count
        (real candidates, not a row's excluded column)."""
        c = _load_rows(C, cols, dims, m, d)
        s = tl.dot(q, tl.trans(c), input_precision=_DOT_PRECISION) * scale
        keep = cols[None, :] < m
        if HAS_EXCLUDE:
            keep = keep & (cols[None, :] != excluded[:, None])
        return c, s, keep

    @triton.jit
    def _lse_forward(Q, C, EXTRA, EXCLUDE, LSE, n, m, d, scale,
                     HAS_EXTRA: tl.constexpr, HAS_EXCLUDE: tl.constexpr,
                     BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
        rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
        dims = tl.arange(0, BLOCK_D)
        q = _load_rows(Q, rows, dims, n, d)
        # A finite floor instead of −∞ keeps exp(m_old − m_new) defined on the first tile.
        row_max = tl.full((BLOCK_M,), -1e30, tl.float32)
        row_sum = tl.zeros((BLOCK_M,), tl.float32)
        if HAS_EXTRA:
            row_max = tl.load(EXTRA + rows, mask=rows < n, other=-1e30).to(tl.float32)
            row_sum += 1.0
        excluded = rows  # read only with HAS_EXCLUDE
        if HAS_EXCLUDE:
            excluded = tl.load(EXCLUDE + rows, mask=rows < n, other=-1)
        for start in range(0, m, BLOCK_N):
            cols = start + tl.arange(0, BLOCK_N)
            _, s, keep = _tile_scores(q, C, cols, dims, m, d, excluded, scale, HAS_EXCLUDE)
            s = tl.where(keep, s, -1e30)
            new_max = tl.maximum(row_max, tl.max(s, 1))
            row_sum = row_sum * tl.exp(row_max - new_max) + tl.sum(tl.where(keep, tl.exp(s - new_max[:, None]), 0.0), 1)
            row_max = new_max
        tl.store(LSE + rows, row_max + tl.log(row_sum), mask=rows < n)

    @triton.jit
    def _lse_backward_queries(Q, C, EXCLUDE, LSE, GRAD, DQ, n, m, d, scale,
                              HAS_EXCLUDE: tl.constexpr,
                              BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
        rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
        dims = tl.arange(0, BLOCK_D)
        row_mask = rows < n
        q = _load_rows(Q, rows, dims, n, d)
        lse = tl.load(LSE + rows, mask=row_mask, other=0.0)
        weight = tl.load(GRAD + rows, mask=row_mask, other=0.0) * scale
        excluded = rows  # read only with HAS_EXCLUDE
        if HAS_EXCLUDE:
            excluded = tl.load(EXCLUDE + rows, mask=row_mask, other=-1)
        acc = tl.zeros((BLOCK_M, BLOCK_D), tl.float32)
        for start in range(0, m, BLOCK_N):
            cols = start + tl.arange(0, BLOCK_N)
            c, s, keep = _tile_scores(q, C, cols, dims, m, d, excluded, scale, HAS_EXCLUDE)
            p = tl.where(keep, tl.exp(s - lse[:, None]), 0.0) * weight[:, None]
            acc += tl.dot(p.to(c.dtype), c, input_precision=_DOT_PRECISION)
        tl.store(DQ + rows[:, None] * d + dims[None, :], acc, mask=row_mask[:, None] & (dims[None, :] < d))

    @triton.jit
    def _lse_backward_candidates(Q, C, EXCLUDE, LSE, GRAD, DC, n, m, d, scale,
                                 HAS_EXCLUDE: tl.constexpr,
                                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
        cols = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
        dims = tl.arange(0, BLOCK_D)
        col_mask = cols < m
        c = _load_rows(C, cols, dims, m, d)
        acc = tl.zeros((BLOCK_N, BLOCK_D), tl.float32)
        for start in range(0, n, BLOCK_M):
            rows = start + tl.arange(0, BLOCK_M)
            row_mask = rows < n
            q = _load_rows(Q, rows, dims, n, d)
            lse = tl.load(LSE + rows, mask=row_mask, other=0.0)
            weight = tl.load(GRAD + rows, mask=row_mask, other=0.0) * scale
            s = tl.dot(c, tl.trans(q), input_precision=_DOT_PRECISION) * scale  # BLOCK_N × BLOCK_M: sᵀ
            keep = col_mask[:, None] & row_mask[None, :]
            if HAS_EXCLUDE:
                excluded = tl.load(EXCLUDE + rows, mask=row_mask, other=-1)
                keep = keep & (cols[:, None] != excluded[None, :])
            p = tl.where(keep, tl.exp(s - lse[None, :]), 0.0) * weight[None, :]
            acc += tl.dot(p.to(q.dtype), q, input_precision=_DOT_PRECISION)
        tl.store(DC + cols[:, None] * d + dims[None, :], acc, mask=col_mask[:, None] & (dims[None, :] < d))


def _launch_settings(q: Tensor) -> dict:
    """Tile sizes and warps: eight warps for fp32 tiles keep the backward kernels under the
    255-register cap (ptxas -v, sm_90: 179–242 registers, against 218–255 with four)."""
    block_d = max(16, triton.next_power_of_2(q.shape[1]))
    warps = 8 if q.dtype == torch.float32 else 4
    return {"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_D": block_d, "num_warps": warps}


class _FusedLSE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, c, extra, exclude, scale):
        q, c = q.contiguous(), c.contiguous()
        n, d = q.shape
        m = c.shape[0]
        lse = torch.empty(n, dtype=torch.float32, device=q.device)
        settings = _launch_settings(q)
        dummy = lse  # an unused pointer argument where extra/exclude are absent
        _lse_forward[(triton.cdiv(n, settings["BLOCK_M"]),)](
            q, c, dummy if extra is None else extra.float().contiguous(), dummy if exclude is None else exclude,
            lse, n, m, d, scale, HAS_EXTRA=extra is not None, HAS_EXCLUDE=exclude is not None, **settings,
        )
        ctx.save_for_backward(q, c, extra, exclude, lse)
        ctx.scale = scale
        return lse

    @staticmethod
    def backward(ctx, grad):
        q, c, extra, exclude, lse = ctx.saved_tensors
        n, d = q.shape
        m = c.shape[0]
        grad = grad.float().contiguous()
        dq = torch.empty(q.shape, dtype=torch.float32, device=q.device)
        dc = torch.empty(c.shape, dtype=torch.float32, device=c.device)
        settings = _launch_settings(q)
        excluded = lse if exclude is None else exclude
        common = {"HAS_EXCLUDE": exclude is not None, **settings}
        _lse_backward_queries[(triton.cdiv(n, settings["BLOCK_M"]),)](
            q, c, excluded, lse, grad, dq, n, m, d, ctx.scale, **common
        )
        _lse_backward_candidates[(triton.cdiv(m, settings["BLOCK_N"]),)](
            q, c, excluded, lse, grad, dc, n, m, d, ctx.scale, **common
        )
        dextra = None if extra is None else (grad * torch.exp(extra.float() - lse)).to(extra.dtype)
        return dq.to(q.dtype), dc.to(c.dtype), dextra, None, None


def fused_available(q: Tensor) -> bool:
    """Whether ``fused_lse`` can run on ``q``: Triton present, a CUDA tensor (or the Triton
    interpreter, for tests) and embeddings that fit one register tile."""
    import os

    runs_here = q.is_cuda or os.environ.get("TRITON_INTERPRET") == "1"
    return triton is not None and runs_here and q.shape[1] <= MAX_FUSED_DIM


def fused_lse(q: Tensor, c: Tensor, temperature: float, extra: Tensor | None = None,
              exclude: Tensor | None = None) -> Tensor:
    """``plain_lse`` by the Triton kernels (see ``fused_available``)."""
    return _FusedLSE.apply(q, c, extra, exclude, 1.0 / temperature)
