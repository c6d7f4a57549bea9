"""The WCC op on the Triton kernels, with its hand-written backward (imported lazily).

Forward (``FORWARD_STRATEGY = "gather"``, the default: three kernels and a top-k):
    haar_score     x -> coefficients (N, C_in, P) and the channel-energy score (N, P)
    select_kept    top-k of the score -> kept positions idx (N, k); rank map (N, P)
    gemm           W @ Q_a(coefficients[:, :, idx]): gather and fake-quant fused on load
    scatter_ihaar  rank-map scatter + inverse Haar + crop + bias -> y (N, C_out, H, W)

``FORWARD_STRATEGY = "compact"`` trades the coefficient tensor for a second read of x:
haar_score computes the score only, haar_compact writes just the kept coefficients
(N, C_in, k), and the GEMM reads them contiguously. Both give the same result; which is faster
depends on the GPU (on a 25% support the gather touches nearly every 32-byte sector of the
dense coefficients, so "compact" moves fewer bytes: ~2 reads of x + k/P of it written and read,
against 1 read + 1 write + ~1 gathered read). The benchmark times both.

Backward, given g = dL/dy (the transforms are orthogonal, so each one's adjoint is the other):
    haar_compact   g -> g_kept (N, C_out, k): forward Haar of the cropped-then-padded grad
                   fused with the gather (pad is the load mask, the adjoint of the crop)
    haar_compact   x -> kept (N, C_in, k): recomputed instead of saved (one more read of x
                   saves N * C_in * k stored values)
    gemm           W^T @ g_kept -> dL/dQ(kept)
    torch          straight-through mask and d/d alpha (wcc.quant's formulas), dL/dW
                   (a reduction over the batch: sum_n g_kept[n] @ Q(kept)[n]^T)
    scatter_ihaar  dL/dkept -> dL/dx
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from wcc.backends.triton import _ops

__all__ = ["WCCTritonFunction", "FORWARD_STRATEGY", "STRATEGIES"]

STRATEGIES = ("gather", "compact")
FORWARD_STRATEGY = "gather"


def _quantize(kept: torch.Tensor, alpha: torch.Tensor, act_bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(u_raw, q) of wcc.quant's signed quantizer on the kept coefficients."""
    n = float(2 ** (act_bits - 1) - 1)
    u_raw = kept / alpha
    return u_raw, torch.round(u_raw.clamp(-1.0, 1.0) * n) / n


class WCCTritonFunction(torch.autograd.Function):
    """y = crop(IWT(scatter_k(W @ Q_a(gather_k(WT(pad(x))))))) + bias on the Triton kernels.

    Inputs share one dtype (float16, bfloat16 or float32): x ``(N, C_in, H, W)``, weight
    ``(C_out, C_in)``, alpha a scalar; bias ``(C_out,)`` or None (any float dtype).
    """

    @staticmethod
    def forward(ctx, x, weight, bias, alpha, levels: int, k: int, act_bits: int | None):  # type: ignore[override]
        h, w = x.shape[-2:]
        if FORWARD_STRATEGY not in STRATEGIES:
            raise ValueError(f"FORWARD_STRATEGY={FORWARD_STRATEGY!r}; choose one of {STRATEGIES}")
        compact = FORWARD_STRATEGY == "compact"
        coeffs, score = _ops.haar_score(x, levels, store_coeffs=not compact)
        idx = _ops.select_kept(score, k)
        rank = _ops.rank_map(idx, score.shape[1])
        del score
        if compact:
            out_kept = _ops.gemm(weight, _ops.haar_compact(x, levels, rank, k), None, alpha, act_bits)
        else:
            assert coeffs is not None  # stored whenever the strategy is not "compact"
            out_kept = _ops.gemm(weight, coeffs, idx, alpha, act_bits)
        del coeffs
        y = _ops.scatter_ihaar(out_kept, rank, levels, h, w, bias)
        ctx.save_for_backward(x, weight, alpha, rank)
        ctx.levels, ctx.k, ctx.act_bits = levels, k, act_bits
        ctx.bias_dtype = bias.dtype if bias is not None else None
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, g):  # type: ignore[override]
        x, weight, alpha, rank = ctx.saved_tensors
        levels, k, act_bits = ctx.levels, ctx.k, ctx.act_bits
        need_x, need_w, need_b, need_a = ctx.needs_input_grad[:4]
        grad_x = grad_w = grad_b = grad_a = None
        h, w = x.shape[-2:]
        g = g.to(x.dtype)

        if need_b:
            grad_b = g.sum(dim=(0, 2, 3), dtype=torch.float32).to(ctx.bias_dtype)
        if not (need_x or need_w or need_a):
            return grad_x, grad_w, grad_b, grad_a, None, None, None

        g_kept = _ops.haar_compact(g, levels, rank, k)  # (N, C_out, k)
        kept = _ops.haar_compact(x, levels, rank, k) if (need_w or need_a or act_bits is not None) else None
        grad_q = _ops.gemm(weight.t(), g_kept) if (need_x or need_a) else None  # (N, C_in, k)

        if act_bits is not None:
            u_raw, q = _quantize(kept, alpha, act_bits)
            outside = u_raw.abs() > 1.0
            if need_a:
                slope = torch.where(outside, u_raw.sign(), q - u_raw)
                grad_a = (grad_q.float() * slope.float()).sum().to(alpha.dtype)
            grad_kept = grad_q.masked_fill(outside, 0.0) if need_x else None
            used = q * alpha  # the values the forward GEMM multiplied
        else:
            grad_kept = grad_q
            used = kept
        if need_w:
            grad_w = torch.matmul(g_kept.float(), used.float().transpose(1, 2)).sum(dim=0).to(weight.dtype)
        if need_x:
            grad_x = _ops.scatter_ihaar(grad_kept, rank, levels, h, w)
        return grad_x, grad_w, grad_b, grad_a, None, None, None
