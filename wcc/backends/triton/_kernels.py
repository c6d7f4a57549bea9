"""Triton kernels of the WCC op (imported lazily: this module needs Triton).

Block transform. The J-level Haar transform is block-local: the coefficients that a
``2^J x 2^J`` pixel block produces depend only on that block. A program therefore loads a row
of ``BT`` *macro-blocks* of ``R x R`` pixels (``R = max(2^J, 4)``: ``tl.dot`` needs K, N >= 16,
so J = 1 packs four 2x2 blocks into one macro-block), flattened to a ``(BT, R*R)`` tile, and
applies the orthonormal transform as one small matrix product with the ``(R*R, R*R)`` matrix
that :mod:`wcc.backends.triton._ops` builds from the reference transform. Where each of the
``R*R`` coefficients lands in the same-size Mallat layout comes from a small int table (see
``_ops.block_tables``); the zero padding to multiples of ``2^J`` is the load mask, so no padded
copy of the input is ever made.

Arithmetic is done in float32 (products of the dot accumulate in float32); values are rounded
to the storage dtype exactly where the reference stores them. Half-precision *arithmetic* is
avoided on purpose: besides being less accurate, the Triton interpreter stores bfloat16 as raw
uint16 and would compute garbage with it (dot operands are cast to ``DOT_DTYPE``, which the
host sets to float32 for bfloat16 under the interpreter for the same reason).

Only builtins of ``triton.language`` are used, none of its @jit-written helpers (``tl.zeros``,
``tl.sum``, ...): those are compiled or interpreted according to ``TRITON_INTERPRET`` when
Triton is *imported*, which would tie both kernel variants (see ``_ops._kernels``) to that.
"""

import triton
import triton.language as tl

# Rows of the (8, R*R) int32 coefficient table built by _ops.block_tables. Globals used in
# kernels must be constexpr.
_T_SHIFT = tl.constexpr(0)  # level j of the coefficient (1..J): its band has H'/2^j x W'/2^j entries
_T_ROWADD = tl.constexpr(1)  # row offset inside the band contributed by the sub-block and in-band row
_T_COLADD = tl.constexpr(2)
_T_VFLAG = tl.constexpr(3)  # 1 when the band sits in the bottom half of its level (V and D bands)
_T_HFLAG = tl.constexpr(4)  # 1 when the band sits in the right half (H and D bands)
_T_SUBROW = tl.constexpr(5)  # pixel row of the coefficient's 2^J sub-block inside the macro-block
_T_SUBCOL = tl.constexpr(6)

# The interpreter converts float32 to bfloat16 by truncation (GPUs round to nearest even):
# under it, _rounded does the rounding on the float32 bits instead. Fixed when this module is
# executed, which happens once per mode (see _ops._kernels).
_INTERPRETED = tl.constexpr(bool(triton.knobs.runtime.interpret))


@triton.jit
def _rounded(v, DTYPE: tl.constexpr):
    """float32 ``v`` rounded to nearest even in DTYPE, returned as float32 (exact in DTYPE)."""
    out = v.to(DTYPE).to(tl.float32)
    if _INTERPRETED:
        if DTYPE == tl.bfloat16:
            bits = v.to(tl.uint32, bitcast=True)
            bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
            out = bits.to(tl.float32, bitcast=True)
    return out


@triton.jit
def _round_half_even(v):
    """torch.round semantics (ties to even), exactly, for |v| < 2**23 in float32.

    floor and the fractional part v - floor(v) are exact, so the tie test is exact too (the
    obvious floor(v + 0.5) is not: v + 0.5 can round up before the floor).
    """
    fl = tl.floor(v)
    frac = v - fl
    odd = (fl - 2.0 * tl.floor(fl * 0.5)) != 0.0
    up = (frac > 0.5) | ((frac == 0.5) & odd)
    return tl.where(up, fl + 1.0, fl)


@triton.jit
def _signed_quant(v, alpha, nlev, QDTYPE: tl.constexpr):
    """The reference's signed fake-quant ``alpha * round(clamp(v/alpha, -1, 1) * n) / n``.

    ``v`` and ``alpha`` are float32 holding QDTYPE values. Each step is computed in float32 and
    rounded to QDTYPE, as torch does for a QDTYPE tensor: one correctly rounded float32 op
    followed by one rounding to half precision equals the correctly rounded half op for
    +, *, / (float32 has more than twice the bits), so the chain matches torch step by step.
    Division is IEEE ``div_rn`` (plain ``/`` is approximate on NVIDIA GPUs).
    """
    u = _rounded(tl.math.div_rn(v, alpha), QDTYPE)
    u = tl.minimum(tl.maximum(u, -1.0), 1.0)
    s = _rounded(u * nlev, QDTYPE)
    q = _rounded(tl.math.div_rn(_round_half_even(s), nlev), QDTYPE)
    return _rounded(q * alpha, QDTYPE)


@triton.jit
def _block_geometry(tab_ptr, mb_row, mb_col, H, W, Hp, Wp, R: tl.constexpr, BT: tl.constexpr):
    """Pixel and coefficient addresses of a row of BT macro-blocks.

    Returns (py, px, pmask, pos, cmask): pixel row (R*R,) and column (BT, R*R) of each input
    element with the in-image mask (padding reads as zero), and the Mallat position (BT, R*R)
    of each coefficient with the mask of coefficients inside the padded H' x W' image.
    """
    R2: tl.constexpr = R * R
    s = tl.arange(0, R2)
    py = mb_row * R + s // R
    px = mb_col[:, None] * R + (s % R)[None, :]
    pmask = (py < H)[None, :] & (px < W)

    shift = tl.load(tab_ptr + _T_SHIFT * R2 + s)
    rowadd = tl.load(tab_ptr + _T_ROWADD * R2 + s)
    coladd = tl.load(tab_ptr + _T_COLADD * R2 + s)
    vflag = tl.load(tab_ptr + _T_VFLAG * R2 + s)
    hflag = tl.load(tab_ptr + _T_HFLAG * R2 + s)
    subrow = tl.load(tab_ptr + _T_SUBROW * R2 + s)
    subcol = tl.load(tab_ptr + _T_SUBCOL * R2 + s)
    # A level-j band of the macro-block row has R >> j rows per macro-block row.
    stride_j = (s * 0 + R) >> shift
    prow = mb_row * stride_j + rowadd + vflag * (Hp >> shift)
    pcol = mb_col[:, None] * stride_j[None, :] + (coladd + hflag * (Wp >> shift))[None, :]
    pos = prow[None, :] * Wp + pcol
    # A 2^J sub-block beyond the padded size produces no coefficients (its positions would
    # alias other bands): mask by the sub-block origin.
    cmask = ((mb_row * R + subrow) < Hp)[None, :] & ((mb_col[:, None] * R + subcol[None, :]) < Wp)
    return py, px, pmask, pos, cmask


@triton.jit
def haar_fwd_kernel(
    x_ptr, sxn, sxc, sxh, sxw,  # input (N, C, H, W), any strides
    out_ptr, son, soc, sop,  # coefficients: dense (N, C, H'W') or compact (N, C, k)
    score_ptr,  # partial scores (N, G, H'W') float32
    rank_ptr,  # (N, H'W') int32: column of each kept position in the compact layout, else -1
    mt_ptr,  # (R*R, R*R) transform, pixel index x coefficient index
    tab_ptr,  # (8, R*R) int32 coefficient table
    C, H, W, Hp, Wp, tiles_w, c_per_group,
    R: tl.constexpr, BT: tl.constexpr,
    WRITE: tl.constexpr,  # 0: no coefficients, 1: dense, 2: compact (kept columns only)
    SCORE: tl.constexpr,  # accumulate sum over this program's channels of coef**2
    DOT_DTYPE: tl.constexpr,
):
    """Forward Haar of one row of macro-blocks of one image for one group of channels.

    Grid: (macro-block rows * tiles_w, channel groups G, N). The channel loop is inside the
    program so the score (sum over channels of the squared coefficient) is accumulated in
    registers and stored once per group; the G partial scores are summed on the host
    (deterministic, unlike atomics).
    """
    R2: tl.constexpr = R * R
    pid = tl.program_id(0)
    grp = tl.program_id(1)
    n = tl.program_id(2).to(tl.int64)
    mb_row = pid // tiles_w
    mb_col = (pid % tiles_w) * BT + tl.arange(0, BT)
    py, px, pmask, pos, cmask = _block_geometry(tab_ptr, mb_row, mb_col, H, W, Hp, Wp, R, BT)

    r2 = tl.arange(0, R2)
    mt = tl.load(mt_ptr + r2[:, None] * R2 + r2[None, :]).to(DOT_DTYPE)
    P = Hp * Wp
    if WRITE == 2:
        col = tl.load(rank_ptr + n * P + pos, mask=cmask, other=-1)
        smask = col >= 0
        dst = col
    else:
        smask = cmask
        dst = pos

    c0 = grp * c_per_group
    c1 = tl.minimum(c0 + c_per_group, C)
    x_ptrs = x_ptr + n * sxn + c0.to(tl.int64) * sxc + py[None, :] * sxh + px * sxw
    o_ptrs = out_ptr + n * son + c0.to(tl.int64) * soc + dst * sop
    score = tl.full((BT, R2), 0.0, tl.float32)
    for _c in range(c0, c1):
        xv = tl.load(x_ptrs, mask=pmask, other=0.0)
        if DOT_DTYPE == tl.float32:
            coef = tl.dot(xv.to(tl.float32), mt, input_precision="ieee")
        else:
            coef = tl.dot(xv.to(DOT_DTYPE), mt)
        # Round to the storage dtype first: the score ranks the coefficients the GEMM uses.
        coef = _rounded(coef, x_ptr.dtype.element_ty)
        if WRITE != 0:
            tl.store(o_ptrs, coef.to(out_ptr.dtype.element_ty), mask=smask)
        if SCORE:
            score += coef * coef
        x_ptrs += sxc
        o_ptrs += soc
    if SCORE:
        G = tl.num_programs(1)
        tl.store(score_ptr + (n * G + grp) * P + pos, score, mask=cmask)


@triton.jit
def gemm_kernel(
    a_ptr, sam, sak,  # A (M, K): the 1x1 weight (C_out, C_in), any strides (transposes too)
    b_ptr, sbn, sbk, sbl,  # B (N, K, L): coefficients, columns gathered through idx
    idx_ptr, sidn,  # (N, ncols) int64 kept positions (GATHER only)
    alpha_ptr, nlev,  # signed fake-quant of B on load (QUANT only)
    c_ptr, scn, scm, scl,  # C (N, M, ncols)
    M, K, ncols,
    BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
    GATHER: tl.constexpr, QUANT: tl.constexpr, DOT_DTYPE: tl.constexpr,
):
    """C[n] = A @ Q(B[n][:, idx[n]]) with float32 accumulation. Grid (M/BM, ncols/BN, N).

    The gather (kept columns) and the activation fake-quant happen on the B tile as it is
    loaded, so neither the kept coefficients nor their quantized copy are ever materialised.
    """
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    n = tl.program_id(2).to(tl.int64)
    offs_m = pid_m * BM + tl.arange(0, BM)
    offs_j = pid_n * BN + tl.arange(0, BN)
    jmask = offs_j < ncols
    if GATHER:
        cols = tl.load(idx_ptr + n * sidn + offs_j, mask=jmask, other=0)
    else:
        cols = offs_j.to(tl.int64)
    if QUANT:
        alpha = tl.load(alpha_ptr).to(tl.float32)
    offs_k = tl.arange(0, BK)
    a_ptrs = a_ptr + offs_m[:, None] * sam + offs_k[None, :] * sak
    b_ptrs = b_ptr + n * sbn + offs_k[:, None] * sbk + cols[None, :] * sbl
    acc = tl.full((BM, BN), 0.0, tl.float32)
    for k0 in range(0, K, BK):
        kmask = (k0 + offs_k) < K
        a = tl.load(a_ptrs, mask=(offs_m[:, None] < M) & kmask[None, :], other=0.0)
        b = tl.load(b_ptrs, mask=kmask[:, None] & jmask[None, :], other=0.0)
        if QUANT:
            b = _signed_quant(b.to(tl.float32), alpha, nlev, b_ptr.dtype.element_ty)
        if DOT_DTYPE == tl.float32:
            acc = tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision="ieee")
        else:
            acc = tl.dot(a.to(DOT_DTYPE), b.to(DOT_DTYPE), acc)
        a_ptrs += BK * sak
        b_ptrs += BK * sbk
    c_ptrs = c_ptr + n * scn + offs_m.to(tl.int64)[:, None] * scm + offs_j[None, :] * scl
    out = _rounded(acc, c_ptr.dtype.element_ty).to(c_ptr.dtype.element_ty)
    tl.store(c_ptrs, out, mask=(offs_m[:, None] < M) & jmask[None, :])


@triton.jit
def scatter_ihaar_kernel(
    src_ptr, ssn, ssc, ssk,  # compact kept coefficients (N, C, k)
    rank_ptr,  # (N, H'W') int32: compact column of each position, -1 where not kept
    m_ptr,  # (R*R, R*R) inverse transform, coefficient index x pixel index
    tab_ptr,  # (8, R*R) int32 coefficient table
    bias_ptr,  # (C,) (HAS_BIAS only)
    y_ptr, syn, syc, syh, syw,  # output (N, C, H, W), any strides
    C, H, W, Hp, Wp, tiles_w, c_per_group,
    R: tl.constexpr, BT: tl.constexpr, HAS_BIAS: tl.constexpr, DOT_DTYPE: tl.constexpr,
):
    """Scatter of the kept coefficients fused with the inverse Haar, the crop and the bias.

    Grid: (macro-block rows * tiles_w, channel groups, N). The dropped coefficients are never
    materialised: each coefficient slot reads its compact column through the rank map (or
    zero), and the rank tile is loaded once for all the program's channels.
    """
    R2: tl.constexpr = R * R
    pid = tl.program_id(0)
    grp = tl.program_id(1)
    n = tl.program_id(2).to(tl.int64)
    mb_row = pid // tiles_w
    mb_col = (pid % tiles_w) * BT + tl.arange(0, BT)
    py, px, pmask, pos, cmask = _block_geometry(tab_ptr, mb_row, mb_col, H, W, Hp, Wp, R, BT)

    r2 = tl.arange(0, R2)
    m = tl.load(m_ptr + r2[:, None] * R2 + r2[None, :]).to(DOT_DTYPE)
    col = tl.load(rank_ptr + n * (Hp * Wp) + pos, mask=cmask, other=-1)
    kept = col >= 0

    c0 = grp * c_per_group
    c1 = tl.minimum(c0 + c_per_group, C)
    s_ptrs = src_ptr + n * ssn + c0.to(tl.int64) * ssc + col * ssk
    y_ptrs = y_ptr + n * syn + c0.to(tl.int64) * syc + py[None, :] * syh + px * syw
    for c in range(c0, c1):
        v = tl.load(s_ptrs, mask=kept, other=0.0)
        if DOT_DTYPE == tl.float32:
            pix = tl.dot(v.to(tl.float32), m, input_precision="ieee")
        else:
            pix = tl.dot(v.to(DOT_DTYPE), m)
        if HAS_BIAS:
            pix += tl.load(bias_ptr + c).to(tl.float32)
        tl.store(y_ptrs, _rounded(pix, y_ptr.dtype.element_ty).to(y_ptr.dtype.element_ty), mask=pmask)
        s_ptrs += ssc
        y_ptrs += syc
