"""Reference-compatible fake quantizers with learned clip values (docs/design.md §3.3).

All three quantizers map a tensor to ``alpha * q`` where ``q`` lies on a uniform grid in
``[-1, 1]`` (or ``(-inf, 1]`` for the unsigned one) and ``alpha`` is a learnable scalar clip.
Gradients are straight-through (rounding counts as the identity); the clip value gets the
usual learned-step gradient: ``sign(u)`` where the input was clipped, ``q - u`` elsewhere.

``bits=None`` means no quantization: the functions return their input unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = [
    "signed_act_quant",
    "unsigned_act_quant",
    "weight_quant",
    "weight_quant_codes",
    "weight_code_tensor",
    "unsigned_act_quant_grads",
    "WeightCodes",
    "ACT_ALPHA_INIT",
    "WEIGHT_ALPHA_INIT",
]

ACT_ALPHA_INIT = 8.0
WEIGHT_ALPHA_INIT = 3.0


def _levels(bits: int) -> float:
    return float(2**bits - 1)


def _signed_codes(u_raw: torch.Tensor, n: float) -> torch.Tensor:
    """Integer codes (as floats) of the signed quantizer for ``u_raw = x / alpha``."""
    return torch.round(u_raw.clamp(-1.0, 1.0) * n)


class _SignedQuant(torch.autograd.Function):
    """u = clamp(x/alpha, -1, 1); q = round(u * n) / n; out = alpha * q."""

    @staticmethod
    def forward(ctx, x, alpha, bits: int, clip_grad: bool):  # type: ignore[override]
        n = _levels(bits)
        u_raw = x / alpha
        q = _signed_codes(u_raw, n) / n
        ctx.save_for_backward(u_raw, q)
        ctx.clip_grad = clip_grad
        return q * alpha

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        u_raw, q = ctx.saved_tensors
        outside = u_raw.abs() > 1.0
        # Activations: straight-through inside the clip range only. Weights (APoT convention,
        # as in the official code): straight-through everywhere, the clip is not masked.
        gx = g.masked_fill(outside, 0.0) if ctx.clip_grad else g
        galpha = (g * torch.where(outside, u_raw.sign(), q - u_raw)).sum().reshape(())
        return gx, galpha.to(g.dtype), None, None


class _UnsignedQuant(torch.autograd.Function):
    """u = min(x/alpha, 1) (no lower clip, as in the official code); q = round(u*n)/n."""

    @staticmethod
    def forward(ctx, x, alpha, bits: int):  # type: ignore[override]
        n = _levels(bits)
        u_raw = x / alpha
        q = torch.round(u_raw.clamp(max=1.0) * n) / n
        ctx.save_for_backward(u_raw, q)
        return q * alpha

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        u_raw, q = ctx.saved_tensors
        gx, galpha = _unsigned_grads(g, u_raw, q)
        return gx, galpha, None


def _unsigned_grads(g: torch.Tensor, u_raw: torch.Tensor, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # Straight-through inside the clip; learned-step alpha gradient (module docstring).
    outside = u_raw > 1.0
    gx = g.masked_fill(outside, 0.0)
    galpha = (g * torch.where(outside, torch.ones_like(u_raw), q - u_raw)).sum().reshape(())
    return gx, galpha.to(g.dtype)


def unsigned_act_quant_grads(g: torch.Tensor, x: torch.Tensor, alpha: torch.Tensor,
                             bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients ``(d x, d alpha)`` of :func:`unsigned_act_quant` for the output gradient ``g``
    (the same formulas as its autograd; for operators that run the forward elsewhere)."""
    n = _levels(bits)
    u_raw = x / alpha
    q = torch.round(u_raw.clamp(max=1.0) * n) / n
    return _unsigned_grads(g, u_raw, q)


def _alpha_like(alpha: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    # Under autocast the activation may be bfloat16 while alpha stays float32: compute in the
    # activation's dtype so the result keeps it (the alpha gradient flows back through .to()).
    return alpha.to(x.dtype) if alpha.dtype != x.dtype else alpha


def signed_act_quant(x: torch.Tensor, alpha: torch.Tensor, bits: int | None) -> torch.Tensor:
    """Signed activation quantizer of WCC (applied to the kept wavelet coefficients).

    ``b = bits - 1`` magnitude bits plus sign: ``n = 2**(bits-1) - 1`` levels per side.
    """
    if bits is None:
        return x
    if bits < 2:
        raise ValueError(f"the signed activation quantizer needs at least 2 bits, got {bits}")
    return _SignedQuant.apply(x, _alpha_like(alpha, x), bits - 1, True)


def unsigned_act_quant(x: torch.Tensor, alpha: torch.Tensor, bits: int | None) -> torch.Tensor:
    """Unsigned activation quantizer of QuantConv2d: ``n = 2**bits - 1`` levels on [0, 1]."""
    if bits is None:
        return x
    return _UnsignedQuant.apply(x, _alpha_like(alpha, x), bits)


def weight_quant(w: torch.Tensor, alpha: torch.Tensor, bits: int | None) -> torch.Tensor:
    """Standardising weight quantizer.

    ``w_hat = (w - mean(w)) / std(w)`` over the whole tensor (unbiased std; the statistics are
    constants for autograd, so ``dw_hat/dw = 1/std``), then the signed quantizer with
    ``bits - 1`` magnitude bits. The result is *not* de-standardised: the following BatchNorm
    absorbs the scale.
    """
    if bits is None:
        return w
    if bits < 2:
        raise ValueError(f"the weight quantizer needs at least 2 bits (sign + magnitude), got {bits}")
    w_hat = _standardise(w)
    return _SignedQuant.apply(w_hat, _alpha_like(alpha, w_hat), bits - 1, False)


def _standardise(w: torch.Tensor) -> torch.Tensor:
    # The statistics are constants for autograd (computed without a graph).
    with torch.no_grad():
        mean, std = w.mean(), w.std()
    return (w - mean) / std


@dataclass(frozen=True)
class WeightCodes:
    """A quantized weight in integer form, for backends with integer GEMMs.

    ``weight_quant(w, alpha, bits) == (codes / levels) * alpha`` elementwise, computed in the
    weight's dtype (the quantizer's own formula), so ``codes * (alpha / levels)`` equals the
    fake-quant weight up to one rounding per element.
    """

    codes: torch.Tensor  #: int8, shaped like the weight
    alpha: float  #: the clip, as the weight's dtype holds it
    levels: float  #: ``2^(bits - 1) - 1``

    @property
    def step(self) -> float:
        """Value of one code step, ``alpha / levels``."""
        return self.alpha / self.levels


def weight_quant_codes(w: torch.Tensor, alpha: torch.Tensor, bits: int | None) -> WeightCodes | None:
    """The codes behind :func:`weight_quant` (no gradient), or None when they do not fit int8.

    None for ``bits=None`` or outside 2..8, and for a weight with non-finite values or a
    non-positive clip (no integer form).
    """
    if bits is None or not 2 <= bits <= 8:
        return None
    with torch.no_grad():
        w_hat = _standardise(w)
        a = _alpha_like(alpha, w_hat)
        if not bool(torch.isfinite(w_hat).all()) or not float(a) > 0:
            return None
    return WeightCodes(codes=weight_code_tensor(w, alpha, bits), alpha=float(a), levels=_levels(bits - 1))


def weight_code_tensor(w: torch.Tensor, alpha: torch.Tensor, bits: int) -> torch.Tensor:
    """The int8 codes of :func:`weight_quant` (``2 <= bits <= 8``), shaped like ``w``, without
    the checks of :func:`weight_quant_codes` (tensor ops only, so a compiled graph holds them):
    meaningful only for a finite weight and a positive clip, which the consumer checks."""
    with torch.no_grad():
        w_hat = _standardise(w)
        return _signed_codes(w_hat / _alpha_like(alpha, w_hat), _levels(bits - 1)).to(torch.int8)
