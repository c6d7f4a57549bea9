"""Host side of the Triton backend: transform tables, kernel launches, selection.

Imported lazily (it imports Triton). Every function takes and returns torch tensors on the
input's device; the kernels themselves are in :mod:`wcc.backends.triton._kernels`.

Interpreter. ``TRITON_INTERPRET`` is read by ``triton.jit`` when a kernel is *defined*, so a
process that imported the kernels once could not switch. The kernel module is therefore loaded
twice on demand, once per mode, under distinct module names; each call picks the variant that
matches ``TRITON_INTERPRET`` *now*. That lets one test session run interpreted kernels on CPU
tensors and compiled ones on CUDA tensors.
"""

from __future__ import annotations

import functools
import importlib.util
import sys
import threading
from pathlib import Path
from types import ModuleType

import torch
import triton
import triton.language as tl

from wcc.haar import haar2d, padded_size

__all__ = [
    "interpreting",
    "macro_block",
    "block_tables",
    "haar_score",
    "haar_compact",
    "gemm",
    "scatter_ihaar",
    "select_kept",
    "rank_map",
]

_KERNEL_MODULES: dict[bool, ModuleType] = {}
_LOCK = threading.Lock()



def interpreting() -> bool:
    """Whether Triton runs kernels in its CPU interpreter (``TRITON_INTERPRET=1``), read now."""
    return bool(triton.knobs.runtime.interpret)


def _kernels() -> ModuleType:
    interpret = interpreting()
    with _LOCK:
        module = _KERNEL_MODULES.get(interpret)
        if module is None:
            name = f"{__package__}._kernels_{'interpreted' if interpret else 'compiled'}"
            spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("_kernels.py"))
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            with triton.knobs.runtime.scope():
                triton.knobs.runtime.interpret = interpret
                spec.loader.exec_module(module)
            _KERNEL_MODULES[interpret] = module
    return module


def macro_block(levels: int) -> int:
    """Side R of the pixel tile one dot transforms: 2^J, at least 4 (tl.dot needs K >= 16)."""
    return max(1 << levels, 4)


@functools.lru_cache(maxsize=None)
def _tables_cpu(levels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(R*R, R*R) float64 forward matrix (coefficient x pixel) and (8, R*R) int32 table.

    The 2^J-block matrix is *measured* from the reference transform (haar2d of each basis
    image), so the kernels share its definition; the macro-block matrix is block-diagonal
    over its (R/2^J)^2 sub-blocks. Coefficient t of the macro-block is local Mallat entry
    (lr, lc) of sub-block (sr, sc); the table says where it goes in the global layout.
    """
    b = 1 << levels
    r = macro_block(levels)
    basis = torch.eye(b * b, dtype=torch.float64).reshape(b * b, b, b)
    local = haar2d(basis, levels).reshape(b * b, b * b).T  # [local coef, local pixel]

    subs = r // b
    n2 = r * r
    fwd = torch.zeros(n2, n2, dtype=torch.float64)
    tab = torch.zeros(8, n2, dtype=torch.int32)
    t = 0
    for sr in range(subs):
        for sc in range(subs):
            for lr in range(b):
                for lc in range(b):
                    # Level of local entry (lr, lc): the band [b>>j, b>>(j-1)) holding max(lr, lc);
                    # (0, 0) is the final LL, stored like a level-J entry with no band flags.
                    j = levels if max(lr, lc) == 0 else levels - max(lr, lc).bit_length() + 1
                    half = b >> j
                    vflag, hflag = int(lr >= half), int(lc >= half)
                    tab[:, t] = torch.tensor([
                        j, sr * half + lr - vflag * half, sc * half + lc - hflag * half,
                        vflag, hflag, sr * b, sc * b, 0,
                    ], dtype=torch.int32)
                    for pr in range(b):
                        for pc in range(b):
                            fwd[t, (sr * b + pr) * r + sc * b + pc] = local[lr * b + lc, pr * b + pc]
                    t += 1
    return fwd, tab


_DEVICE_TABLES: dict[tuple[int, torch.device], tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}


def block_tables(levels: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(pixel x coef) forward matrix, (coef x pixel) inverse matrix, both float32, and the
    int32 table, on ``device`` (cached). The entries are +-2^-j: exact in every dtype."""
    key = (levels, device)
    if key not in _DEVICE_TABLES:
        fwd, tab = _tables_cpu(levels)
        # The transform is orthogonal: the inverse is the transpose of the forward matrix.
        _DEVICE_TABLES[key] = (
            fwd.T.contiguous().to(device, torch.float32),
            fwd.contiguous().to(device, torch.float32),
            tab.to(device),
        )
    return _DEVICE_TABLES[key]


def _dot_dtype(dtype: torch.dtype) -> tl.dtype:
    if dtype == torch.float16:
        return tl.float16
    if dtype == torch.bfloat16 and not interpreting():
        return tl.bfloat16
    # float32, and bfloat16 under the interpreter, which cannot multiply bfloat16 matrices
    # (it stores them as uint16); the bfloat16 values are exact in float32.
    return tl.float32


def _geometry(h: int, w: int, levels: int) -> tuple[int, int, int, int, int, int]:
    """Padded size, macro-block side R, tile width BT (macro-blocks) and tiles per row."""
    hp, wp = padded_size(h, levels), padded_size(w, levels)
    r = macro_block(levels)
    bt = max(16, 128 // r)  # a program covers 128 pixel columns; dot M >= 16
    tiles_w = triton.cdiv(triton.cdiv(wp, r), bt)
    return hp, wp, r, bt, tiles_w, triton.cdiv(hp, r)


def _channel_groups(channels: int, spatial_programs: int, device: torch.device) -> tuple[int, int]:
    """(channels per program, number of groups): enough programs to fill a GPU, one group in
    the interpreter; at least one group, so zero channels still write zero scores."""
    if device.type != "cuda" or interpreting():
        return max(1, channels), 1
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    groups = max(1, min(channels // 16, triton.cdiv(4 * sms, spatial_programs)))
    per_group = max(1, triton.cdiv(channels, groups))
    return per_group, max(1, triton.cdiv(channels, per_group))


def haar_score(
    x: torch.Tensor, levels: int, store_coeffs: bool = True
) -> tuple[torch.Tensor | None, torch.Tensor]:
    """Forward Haar fused with the channel norm.

    Args:
        x: ``(N, C, H, W)`` float16/bfloat16/float32, any strides; padded with zeros on read.
    Returns:
        coefficients ``(N, C, H'W')`` in x's dtype (None when ``store_coeffs`` is False) and
        the score ``(N, H'W')`` float32: the sum over channels of the squared coefficient
        (as stored, so it ranks exactly the values the GEMM multiplies).
    """
    n, c, h, w = x.shape
    hp, wp, r, bt, tiles_w, rows = _geometry(h, w, levels)
    p = hp * wp
    fwd_t, _, tab = block_tables(levels, x.device)
    cpg, groups = _channel_groups(c, rows * tiles_w * n, x.device)
    coeffs = torch.empty(n, c, p, device=x.device, dtype=x.dtype) if store_coeffs else None
    partial = torch.empty(n, groups, p, device=x.device, dtype=torch.float32)
    out = coeffs if coeffs is not None else partial  # unused pointer when WRITE == 0
    _kernels().haar_fwd_kernel[(rows * tiles_w, groups, n)](
        x, *x.stride(), out, out.stride(0), out.stride(1), out.stride(2),
        partial, partial, fwd_t, tab,
        c, h, w, hp, wp, tiles_w, cpg,
        R=r, BT=bt, WRITE=1 if store_coeffs else 0, SCORE=True, DOT_DTYPE=_dot_dtype(x.dtype),
    )
    score = partial[:, 0] if groups == 1 else partial.sum(dim=1)
    return coeffs, score


def haar_compact(x: torch.Tensor, levels: int, rank: torch.Tensor, k: int) -> torch.Tensor:
    """Forward Haar fused with the gather of the kept positions.

    Args:
        x: ``(N, C, H, W)``; rank: ``(N, H'W')`` int32 from :func:`rank_map`.
    Returns:
        ``(N, C, k)`` in x's dtype: the kept coefficients, columns in ascending position order.
    """
    n, c, h, w = x.shape
    hp, wp, r, bt, tiles_w, rows = _geometry(h, w, levels)
    fwd_t, _, tab = block_tables(levels, x.device)
    cpg, groups = _channel_groups(c, rows * tiles_w * n, x.device)
    kept = torch.empty(n, c, k, device=x.device, dtype=x.dtype)
    _kernels().haar_fwd_kernel[(rows * tiles_w, groups, n)](
        x, *x.stride(), kept, *kept.stride(),
        kept, rank, fwd_t, tab,
        c, h, w, hp, wp, tiles_w, cpg,
        R=r, BT=bt, WRITE=2, SCORE=False, DOT_DTYPE=_dot_dtype(x.dtype),
    )
    return kept


def select_kept(score: torch.Tensor, k: int) -> torch.Tensor:
    """The k highest-ranked scores per image, as ``(N, k)`` int64 positions sorted ascending.

    Same ranking as the reference (:func:`wcc.backends.reference.select_from_score`):
    non-finite scores rank as ``+inf`` and ties go to the lowest position. torch.topk finds the
    k-th key (a single-pass radix select on CUDA); every key above it is kept, and of the keys
    equal to it the lowest positions fill the rest (topk alone would pick among ties
    arbitrarily). The mask's nonzero positions come out ascending, the documented order.
    """
    key = torch.nan_to_num(score, nan=float("inf"))
    thr = torch.topk(key, k, dim=1, sorted=False).values.min(dim=1, keepdim=True).values
    above = key > thr
    tie = key == thr
    room = k - above.sum(dim=1, keepdim=True)  # how many ties each image keeps
    keep = above | (tie & (tie.cumsum(dim=1) <= room))
    return keep.nonzero()[:, 1].view(score.shape[0], k)


def rank_map(idx: torch.Tensor, positions: int) -> torch.Tensor:
    """``(N, P)`` int32: the compact column of each kept position, -1 where dropped."""
    n, k = idx.shape
    rank = torch.full((n, positions), -1, device=idx.device, dtype=torch.int32)
    cols = torch.arange(k, device=idx.device, dtype=torch.int32).expand(n, k)
    return rank.scatter_(1, idx, cols)


def _gemm_blocks(m: int, k: int, ncols: int, half: bool) -> tuple[int, int, int, int, int]:
    """(BM, BN, BK, num_warps, num_stages); powers of two >= 16 (tl.dot minimum)."""
    def fit(size: int, cap: int) -> int:
        return max(16, min(cap, triton.next_power_of_2(size)))

    if interpreting():
        # Fewer, larger tiles: the interpreter's cost is per program and per numpy call.
        return fit(m, 64), fit(ncols, 64), fit(k, 64), 4, 1
    # Chosen from ptxas resource usage for sm_90 (no GPU was at hand to time them): float16/
    # bfloat16 128x128x32 needs ~200 registers and no spills; float32 (IEEE, FMA dot) spills
    # heavily with BK >= 32 or 128x128 tiles, 128x64x16 keeps it to a few bytes.
    if half:
        bm, bn, bk = fit(m, 128), fit(ncols, 128), fit(k, 32)
        return bm, bn, bk, 8 if bm * bn >= 128 * 128 else 4, 3
    bm, bn, bk = fit(m, 128), fit(ncols, 64), 16
    return bm, bn, bk, 8 if bm * bn >= 128 * 64 else 4, 3


def gemm(
    a: torch.Tensor,
    b: torch.Tensor,
    idx: torch.Tensor | None = None,
    alpha: torch.Tensor | None = None,
    act_bits: int | None = None,
) -> torch.Tensor:
    """``out[n] = a @ Q(b[n][:, idx[n]])`` with float32 accumulation, in b's dtype.

    Args:
        a: ``(M, K)`` (any strides; pass ``w.t()`` for the transposed product).
        b: ``(N, K, L)``.
        idx: ``(N, k)`` int64 columns of b to use; None uses all L columns.
        alpha, act_bits: the signed activation quantizer applied to the gathered b (when
            ``act_bits`` is not None); alpha is a scalar tensor in b's dtype.
    Returns:
        ``(N, M, k)`` (or ``(N, M, L)``).
    """
    n, kdim, length = b.shape
    m = a.shape[0]
    ncols = idx.shape[1] if idx is not None else length
    out = torch.empty(n, m, ncols, device=b.device, dtype=b.dtype)
    bm, bn, bk, warps, stages = _gemm_blocks(m, kdim, ncols, b.dtype != torch.float32)
    quant = act_bits is not None
    nlev = float(2 ** (act_bits - 1) - 1) if act_bits is not None else 1.0
    idx_arg = idx if idx is not None else out
    grid = (triton.cdiv(m, bm), triton.cdiv(ncols, bn), n)
    _kernels().gemm_kernel[grid](
        a, a.stride(0), a.stride(1),
        b, *b.stride(),
        idx_arg, idx_arg.stride(0),
        alpha if quant else out, nlev,
        out, *out.stride(),
        m, kdim, ncols,
        BM=bm, BN=bn, BK=bk, GATHER=idx is not None, QUANT=quant, DOT_DTYPE=_dot_dtype(b.dtype),
        num_warps=warps, num_stages=stages,
    )
    return out


def scatter_ihaar(
    src: torch.Tensor,
    rank: torch.Tensor,
    levels: int,
    height: int,
    width: int,
    bias: torch.Tensor | None = None,
    out_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Scatter the kept coefficients into the Mallat layout, inverse Haar, crop, add bias.

    Args:
        src: ``(N, C, k)`` kept coefficients (compact columns, see :func:`rank_map`).
        rank: ``(N, H'W')`` int32.
        bias: ``(C,)`` or None, added in the spatial domain.
    Returns:
        ``(N, C, height, width)`` in ``out_dtype`` (default: src's dtype).
    """
    n, c, _ = src.shape
    hp, wp, r, bt, tiles_w, rows = _geometry(height, width, levels)
    _, inv, tab = block_tables(levels, src.device)
    y = torch.empty(n, c, height, width, device=src.device, dtype=out_dtype or src.dtype)
    cpg, groups = _channel_groups(c, rows * tiles_w * n, src.device)
    _kernels().scatter_ihaar_kernel[(rows * tiles_w, groups, n)](
        src, *src.stride(), rank, inv, tab,
        bias if bias is not None else y,
        y, *y.stride(),
        c, height, width, hp, wp, tiles_w, cpg,
        R=r, BT=bt, HAS_BIAS=bias is not None, DOT_DTYPE=_dot_dtype(src.dtype),
    )
    return y
