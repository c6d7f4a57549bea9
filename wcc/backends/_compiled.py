"""What the compiled backends share (``cpu``: C++/OpenMP, ``cuda``: CUDA kernels).

Both register a ``forward``/``backward`` op pair under their own ``torch.ops`` namespace
(``wcc_cpu``, ``wcc_cuda``) with one signature; this module holds, once, the alpha they hand to
their kernels and the autograd wrapper around such a pair. It imports no backend.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["alpha_value", "wcc_function"]


def alpha_value(act_alpha: torch.Tensor, dtype: torch.dtype, act_bits: int) -> float:
    """The activation clip as the kernels take it: a Python float of ``act_alpha`` cast to the
    activation ``dtype`` (the reference quantizes with that value; a float holds it exactly for
    float64, float32, float16 and bfloat16); 1.0 when activations are not quantized."""
    if not act_bits:
        return 1.0
    return float(act_alpha.detach().to(dtype))


def wcc_function(namespace: str) -> Any:
    """An autograd Function around ``torch.ops.<namespace>.forward`` / ``.backward``.

    ``apply(x, weight, bias, act_alpha, levels, k, act_bits)``: x ``(N, C_in, H, W)``, weight
    ``(C_out, C_in)``, bias ``(C_out,)`` or None -> ``(N, C_out, H, W)``. The backward returns the
    reference's gradients (straight-through inside the clip, learned-step alpha gradient, the
    kept set a constant); the bias gradient is the output gradient summed over N, H, W.
    """

    def ops() -> Any:
        return getattr(torch.ops, namespace)

    class _WCCFunction(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, weight, bias, act_alpha, levels: int, k: int, act_bits: int):  # type: ignore[override]
            alpha = alpha_value(act_alpha, x.dtype, act_bits)
            y, kept, saved = ops().forward(x, weight, bias, alpha, levels, k, act_bits, True)
            ctx.save_for_backward(weight, saved, kept)
            ctx.alpha, ctx.levels, ctx.act_bits = alpha, levels, act_bits
            ctx.alpha_meta = (act_alpha.shape, act_alpha.dtype)
            return y

        @staticmethod
        def backward(ctx, gy):  # type: ignore[override]
            weight, saved, kept = ctx.saved_tensors
            need_x, need_w, need_b, need_a = ctx.needs_input_grad[:4]
            gx = gw = gb = ga = None
            if need_x or need_w or (need_a and ctx.act_bits):
                gx, gw, ga = ops().backward(gy, weight, saved, kept, ctx.alpha, ctx.levels, ctx.act_bits,
                                            need_x, need_w)
                gx = gx if need_x else None
                gw = gw if need_w else None
                if need_a and ctx.act_bits and ga is not None:
                    shape, dtype = ctx.alpha_meta
                    ga = ga.to(dtype).reshape(shape)
                else:
                    ga = None
            if need_b:
                gb = gy.sum(dim=(0, 2, 3))
            return gx, gw, gb, ga, None, None, None

    _WCCFunction.__name__ = _WCCFunction.__qualname__ = f"WCCFunction[{namespace}]"
    return _WCCFunction
