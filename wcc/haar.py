"""Orthonormal multi-level 2-D Haar transform (reference implementation).

Layout: a same-size Mallat pyramid. One level maps the top-left ``h x w`` region (the current
LL band) to four ``h/2 x w/2`` bands::

    +------+------+
    |  LL  |  H   |      LL = (a + b + c + d) / 2      for each 2x2 block [[a, b],
    +------+------+      H  = (a - b + c - d) / 2                          [c, d]]
    |  V   |  D   |      V  = (a + b - c - d) / 2
    +------+------+      D  = (a - b - c + d) / 2

and level ``j + 1`` recurses on the LL band. Each basis filter has unit L2 norm, so the
transform is orthogonal: energy is preserved and the inverse is the transpose. That is also
why autograd is trivial and exact: the backward of the forward transform *is* the inverse
transform (and vice versa), and nothing needs to be saved for backward.

Shapes: ``x`` is ``(..., H, W)`` with ``H`` and ``W`` multiples of ``2**levels`` (use
:func:`pad_to_multiple` first); the output has the same shape and dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["check_levels", "haar2d", "ihaar2d", "max_levels", "pad_to_multiple", "padded_size"]


def padded_size(size: int, levels: int) -> int:
    """Smallest multiple of ``2**levels`` that is >= ``size``."""
    m = 1 << levels
    return -(-size // m) * m


def max_levels(height: int, width: int) -> int:
    """The most Haar levels an ``height x width`` map supports: ``2**levels <= 8 * max(H, W)``.

    Past the level where one block covers the whole map, every further level only doubles the
    zero padding on both sides (the padded grid grows 4x per level while the map stays the
    same), so ``levels=14`` on a 2x2 map would ask for a 16384x16384 grid per channel. Three
    such levels are allowed: the default ``levels=3`` must keep working on 1x1 maps (DeepLab's
    image-pooling branch), which pads each side 8x.
    """
    return max(1, (8 * max(height, width, 1)).bit_length() - 1)


def check_levels(height: int, width: int, levels: int) -> None:
    """Raise ``ValueError`` unless ``levels`` fits an ``height x width`` input (see :func:`max_levels`).

    Every backend calls this before any work, so an impossible setting fails the same way,
    with a message saying what to do, whichever backend runs.
    """
    top = max_levels(height, width)
    if levels > top:
        raise ValueError(
            f"levels={levels} is too many Haar levels for a {height}x{width} input: at most {top} "
            f"(2**levels <= 8 * max(H, W)); more levels only add zero padding. Use levels <= {top} "
            f"for this layer, or feed it a larger feature map"
        )


def pad_to_multiple(x: torch.Tensor, levels: int) -> torch.Tensor:
    """Zero-pad the last two dims at the bottom and right to multiples of ``2**levels``.

    Height and width get their own pad (the official layer swaps them, which breaks
    non-square inputs such as KITTI's 192x640).
    """
    h, w = x.shape[-2:]
    ph, pw = padded_size(h, levels) - h, padded_size(w, levels) - w
    if ph == 0 and pw == 0:
        return x
    return F.pad(x, (0, pw, 0, ph))


def _check(x: torch.Tensor, levels: int) -> None:
    if levels < 1:
        raise ValueError(f"levels must be >= 1, got {levels}")
    if x.dim() < 2:
        raise ValueError(f"expected a tensor of shape (..., H, W), got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"the Haar transform needs a floating dtype, got {x.dtype}")
    h, w = x.shape[-2:]
    m = 1 << levels
    if h % m or w % m:
        raise ValueError(
            f"H={h} and W={w} must be multiples of 2**levels={m}; pad with pad_to_multiple(x, {levels})"
        )


def _forward_levels(x: torch.Tensor, levels: int) -> torch.Tensor:
    out = x.clone()
    h, w = x.shape[-2:]
    for _ in range(levels):
        ll = out[..., :h, :w]
        a, b = ll[..., 0::2, 0::2], ll[..., 0::2, 1::2]
        c, d = ll[..., 1::2, 0::2], ll[..., 1::2, 1::2]
        bands = (
            (a + b + c + d) * 0.5,  # LL
            (a - b + c - d) * 0.5,  # H: difference along width
            (a + b - c - d) * 0.5,  # V: difference along height
            (a - b - c + d) * 0.5,  # D: diagonal
        )
        h2, w2 = h // 2, w // 2
        out[..., :h2, :w2] = bands[0]
        out[..., :h2, w2:w] = bands[1]
        out[..., h2:h, :w2] = bands[2]
        out[..., h2:h, w2:w] = bands[3]
        h, w = h2, w2
    return out


def _inverse_levels(y: torch.Tensor, levels: int) -> torch.Tensor:
    out = y.clone()
    H, W = y.shape[-2:]
    for j in reversed(range(levels)):
        h, w = H >> j, W >> j  # size of the region this level reconstructs
        h2, w2 = h // 2, w // 2
        ll = out[..., :h2, :w2].clone()
        hb = out[..., :h2, w2:w].clone()
        vb = out[..., h2:h, :w2].clone()
        db = out[..., h2:h, w2:w].clone()
        # Transpose of the forward 4x4 orthonormal matrix (it is symmetric).
        out[..., 0:h:2, 0:w:2] = (ll + hb + vb + db) * 0.5  # a
        out[..., 0:h:2, 1:w:2] = (ll - hb + vb - db) * 0.5  # b
        out[..., 1:h:2, 0:w:2] = (ll + hb - vb - db) * 0.5  # c
        out[..., 1:h:2, 1:w:2] = (ll - hb - vb + db) * 0.5  # d
    return out


class _HaarFn(torch.autograd.Function):
    """The transform (``inverse=False``) or its inverse, with the other one as the backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, levels: int, inverse: bool) -> torch.Tensor:  # type: ignore[override]
        ctx.levels, ctx.inverse = levels, inverse
        return _inverse_levels(x, levels) if inverse else _forward_levels(x, levels)

    @staticmethod
    def backward(ctx, g: torch.Tensor):  # type: ignore[override]
        # Orthogonal transform: the adjoint of each direction is the other one.
        return _HaarFn.apply(g, ctx.levels, not ctx.inverse), None, None


def haar2d(x: torch.Tensor, levels: int) -> torch.Tensor:
    """J-level orthonormal Haar transform over the last two dims (Mallat layout, same shape)."""
    _check(x, levels)
    return _HaarFn.apply(x, levels, False)


def ihaar2d(y: torch.Tensor, levels: int) -> torch.Tensor:
    """Inverse of :func:`haar2d` (its exact adjoint)."""
    _check(y, levels)
    return _HaarFn.apply(y, levels, True)
