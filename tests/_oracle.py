"""An independent, plainly written float64 WCC used as the test oracle.

Written from docs/design.md §3 with dense matrices instead of strided slicing, so it shares no code with
wcc.haar or the backends: one Haar level on the h x w LL block X is ``A_h X A_w^T`` where the
1-D analysis matrix ``A_n`` has averages (e_2i + e_2i+1)/sqrt2 in its first n/2 rows and
differences (e_2i - e_2i+1)/sqrt2 in the rest; J levels recurse on the top-left block.
"""

from __future__ import annotations

import math

import torch


def haar_matrix(n: int) -> torch.Tensor:
    """(n, n) one-level 1-D analysis matrix: averages on top, differences below."""
    a = torch.zeros(n, n, dtype=torch.float64)
    for i in range(n // 2):
        a[i, 2 * i] = a[i, 2 * i + 1] = 1 / math.sqrt(2)
        a[n // 2 + i, 2 * i] = 1 / math.sqrt(2)
        a[n // 2 + i, 2 * i + 1] = -1 / math.sqrt(2)
    return a


def padded(n: int, levels: int) -> int:
    m = 2**levels
    return int(math.ceil(n / m) * m)


def oracle_transform(xp: torch.Tensor, levels: int) -> torch.Tensor:
    """J-level Mallat transform of (..., H', W'): level j maps the LL block X to A X A^T."""
    out = xp.clone()
    h, w = xp.shape[-2:]
    for _ in range(levels):
        out[..., :h, :w] = haar_matrix(h) @ out[..., :h, :w] @ haar_matrix(w).T
        h, w = h // 2, w // 2
    return out


def oracle_inverse(y: torch.Tensor, levels: int) -> torch.Tensor:
    out = y.clone()
    hp, wp = y.shape[-2:]
    for j in reversed(range(levels)):
        h, w = hp >> j, wp >> j
        out[..., :h, :w] = haar_matrix(h).T @ out[..., :h, :w] @ haar_matrix(w)
    return out


def oracle_coeffs(x: torch.Tensor, levels: int) -> torch.Tensor:
    n, c, h, w = x.shape
    hp, wp = padded(h, levels), padded(w, levels)
    xp = torch.zeros(n, c, hp, wp, dtype=torch.float64)
    xp[:, :, :h, :w] = x
    return oracle_transform(xp, levels)


def oracle_quant_signed(v: torch.Tensor, alpha: float, bits: int | None) -> torch.Tensor:
    if bits is None:
        return v
    n = 2 ** (bits - 1) - 1
    return alpha * torch.round(torch.clamp(v / alpha, -1, 1) * n) / n


def oracle_weight_quant(w: torch.Tensor, alpha: float, bits: int | None) -> torch.Tensor:
    if bits is None:
        return w
    w_hat = (w - w.mean().detach()) / w.std().detach()
    n = 2 ** (bits - 1) - 1
    u = torch.clamp(w_hat / alpha, -1, 1)
    return alpha * torch.sign(u) * torch.round(u.abs() * n) / n


def oracle_wcc(x, weight, bias, levels, keep_ratio, weight_bits=None, act_bits=None,
               act_alpha=8.0, weight_alpha=3.0):
    """Float64 WCC: x (N,Ci,H,W), weight (Co,Ci,1,1), bias (Co,) or None -> (N,Co,H,W)."""
    n, c, h, w = x.shape
    hp, wp = padded(h, levels), padded(w, levels)
    coeffs = oracle_coeffs(x, levels)  # (N, C, H', W')
    k = max(1, int(math.floor(hp * wp * keep_ratio)))
    score = (coeffs.detach() ** 2).sum(dim=1).reshape(n, -1)
    mask = torch.zeros(n, hp * wp, dtype=torch.float64)
    for i in range(n):
        order = torch.argsort(score[i], descending=True)
        mask[i, order[:k]] = 1.0
    mask = mask.reshape(n, 1, hp, wp)
    kept = oracle_quant_signed(coeffs, act_alpha, act_bits) * mask
    wq = oracle_weight_quant(weight.reshape(weight.shape[0], -1), weight_alpha, weight_bits)
    out = torch.einsum("oc,nchw->nohw", wq, kept)
    y = oracle_inverse(out, levels)[:, :, :h, :w]
    if bias is not None:
        y = y + bias.view(1, -1, 1, 1)
    return y, mask.reshape(n, -1)
