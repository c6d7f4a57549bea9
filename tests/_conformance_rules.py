"""The shared rules every backend follows beyond the float contract (docs/design.md §3.4, reference backend docstring):
``levels`` is checked against the input's size, and NaN/Inf inputs have one defined selection.

Used by the conformance battery (``tests/test_conformance.py``, every backend x device x dtype) and by
the fault module's case 5 (``tests/test_faults.py``), so the rule is written down once.
"""

from __future__ import annotations

import math

import pytest
import torch

from wcc import WCCConfig

#: levels far above log2 of a 2x2 map: 2**12 padding made the old reference allocate 16M per
#: channel, and 64 ended in a TypeError.
TOO_MANY_LEVELS = (12, 64)
#: (H, W), levels at the limit: these must still run (1x1 with the default 3 is ASPP's pooled branch).
AT_THE_LIMIT = (((1, 1), 3), ((2, 2), 4), ((3, 5), 5))


def documented_selection(x: torch.Tensor, cfg: WCCConfig) -> torch.Tensor:
    """(N, k) int64 kept positions by the documented rule, computed in float64 independently of any
    backend: highest channel energy first, a non-finite energy ranks as +inf, ties go to the lowest
    Mallat index."""
    from wcc.haar import haar2d, pad_to_multiple
    from wcc.rules import keep_count

    xp = pad_to_multiple(x.detach().cpu().double(), cfg.levels)
    energy = haar2d(xp, cfg.levels).flatten(2).square().sum(1)  # (N, P)
    k = keep_count(x.shape[-2], x.shape[-1], cfg)
    out = []
    for row in energy.tolist():
        key = [float("inf") if math.isnan(v) else v for v in row]  # NaN ranks as +inf
        order = sorted(range(len(key)), key=lambda p: (-key[p], p))
        out.append(sorted(order[:k]))
    return torch.tensor(out, dtype=torch.int64)


def nonfinite_input(seed: int = 3) -> torch.Tensor:
    """(2, 3, 9, 7) float64 input whose NaN positions far outnumber the kept coefficients, with +Inf,
    -Inf and a sign-bit NaN: the case where the cpu backend and the reference used to disagree."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 3, 9, 7, generator=gen, dtype=torch.float64)
    x[torch.rand(x.shape, generator=gen) < 0.5] = float("nan")
    x[0, 0, 0, 0] = float("inf")
    x[1, 2, 3, 3] = -float("inf")
    x[1, 1, 5, 5] = -float("nan")  # a NaN with the sign bit set ranks like any other NaN
    return x


def tie_input() -> torch.Tensor:
    """(1, 2, 6, 6): every energy 0 except one, so the rest of the selection is one big tie."""
    x = torch.zeros(1, 2, 6, 6, dtype=torch.float64)
    x[0, 1, 4, 5] = 2.0
    return x


def check_levels_rejected(backend, levels: int, device: torch.device, dtype: torch.dtype) -> None:
    """``levels`` beyond a 2x2 input is a ValueError naming the limit, from wcc_conv and keep_indices."""
    cfg = WCCConfig(levels=levels, backend=backend.name)
    x = torch.randn(1, 2, 2, 2).to(device=device, dtype=dtype)
    w, alpha = torch.randn(3, 2).to(device=device, dtype=dtype), torch.tensor(4.0, device=device, dtype=dtype)
    with pytest.raises(ValueError, match=r"levels=\d+ is too many Haar levels for a 2x2 input: at most 4"):
        backend.wcc_conv(x, w, None, alpha, cfg)
    with pytest.raises(ValueError, match="too many Haar levels"):
        backend.keep_indices(x, cfg)


def check_levels_at_the_limit(backend, device: torch.device, dtype: torch.dtype) -> None:
    for (h, w), levels in AT_THE_LIMIT:
        cfg = WCCConfig(levels=levels, backend=backend.name)
        x = torch.randn(1, 2, h, w).to(device=device, dtype=dtype)
        y = backend.wcc_conv(x, torch.randn(3, 2).to(device=device, dtype=dtype), None,
                             torch.tensor(4.0, device=device, dtype=dtype), cfg)
        assert y.shape == (1, 3, h, w)


def check_nonfinite_rule(backend, device: torch.device, dtype: torch.dtype, tol: float) -> None:
    """Kept positions equal the documented rule exactly; the output's NaN mask equals the float64
    reference's, and its finite values match to ``tol`` relative to their largest magnitude."""
    from wcc.backends import get_backend

    cfg = WCCConfig(levels=2, keep_ratio=0.25, backend=backend.name)
    x64 = nonfinite_input()
    x = x64.to(device=device, dtype=dtype)
    assert torch.equal(backend.keep_indices(x, cfg).cpu(), documented_selection(x64, cfg))
    gen = torch.Generator().manual_seed(4)
    weight = torch.randint(-64, 65, (4, 3), generator=gen).double() / 64  # dyadic: exact in every dtype
    alpha = torch.tensor(4.0, dtype=torch.float64)
    y = backend.wcc_conv(x, weight.to(device=device, dtype=dtype), None, alpha.to(device=device, dtype=dtype), cfg)
    y = y.detach().cpu().double()
    y_ref = get_backend("reference").wcc_conv(x64, weight, None, alpha, cfg)
    assert torch.equal(y.isnan(), y_ref.isnan()), "NaN masks differ from the float64 reference"
    assert torch.equal(y.isinf(), y_ref.isinf()), "Inf masks differ from the float64 reference"
    finite = y_ref.isfinite()
    if bool(finite.any()):
        err = float((y[finite] - y_ref[finite]).abs().max()) / max(float(y_ref[finite].abs().max()), 1e-30)
        assert err <= tol, f"finite outputs: max |backend - reference64| / scale = {err:.3g} > {tol}"


def check_ties_lowest_position(backend, device: torch.device, dtype: torch.dtype) -> None:
    cfg = WCCConfig(levels=1, keep_ratio=0.5, backend=backend.name)
    x64 = tie_input()
    assert torch.equal(backend.keep_indices(x64.to(device=device, dtype=dtype), cfg).cpu(),
                       documented_selection(x64, cfg))


def alpha_grad_scale(x: torch.Tensor, weight: torch.Tensor, grad: torch.Tensor, cfg: WCCConfig, alpha: float,
                     support: torch.Tensor | None = None) -> float:
    """sum |dL/dq * dq/dalpha| over the kept coefficients (float64): the scale of the activation clip's
    gradient rounding error (its terms cancel, so a relative check against its value is meaningless).

    ``support`` (N, k) gives the kept positions; by default the reference's selection."""
    from wcc.backends.reference import select_positions
    from wcc.haar import haar2d, pad_to_multiple
    from wcc.rules import keep_count

    n, levels = x.shape[0], cfg.levels
    coeffs = haar2d(pad_to_multiple(x, levels), levels).flatten(2)
    if support is None:
        support = select_positions(coeffs, keep_count(x.shape[-2], x.shape[-1], cfg))
    k = support.shape[1]
    kept = coeffs.gather(2, support[:, None].expand(n, x.shape[1], k))
    g_kept = haar2d(pad_to_multiple(grad, levels), levels).flatten(2).gather(2, support[:, None].expand(
        n, weight.shape[0], k))
    grad_q = weight.T @ g_kept
    nlev = 2 ** (cfg.act_bits - 1) - 1
    u = kept / alpha
    q = torch.round(u.clamp(-1, 1) * nlev) / nlev
    return float((grad_q * torch.where(u.abs() > 1, u.sign(), q - u)).abs().sum())
