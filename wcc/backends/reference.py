"""The reference backend: the specification of the WCC op, in plain PyTorch.

    y = crop( IWT( scatter_k( W @ Q_a( gather_k( WT( pad(x) ) ) ) ) ) ) + bias

Short and obvious on purpose; fast backends are tested against it. Autograd does the
backward: the Haar transforms are exact adjoints of each other, the kept index set is a
constant (gradient flows only to kept coefficients), the quantizer is straight-through.

Defined behaviour that every backend shares (the conformance and fault tests check it):

* ``levels`` must fit the input: ``2**levels <= 8 * max(H, W)`` (:func:`wcc.haar.check_levels`),
  else ``ValueError`` before any work.
* Selection ranks the per-position channel energy ``sum_c coeff**2``. A non-finite energy (a NaN
  or an Inf anywhere in that position's channels) ranks as ``+inf``: above every finite energy,
  and NaN and Inf rank equal. Equal energies (such ties, and e.g. the zeros of the padding) are
  broken by the lowest position in the flattened padded Mallat layout. So the kept set, and
  with it the output's NaN mask, is a function of the input alone.
"""

from __future__ import annotations

import torch

from wcc.backends._registry import Backend, register_backend
from wcc.config import WCCConfig
from wcc.haar import check_levels, haar2d, ihaar2d, pad_to_multiple, padded_size
from wcc.quant import signed_act_quant
from wcc.rules import keep_count

__all__ = ["ReferenceBackend", "has_nonfinite", "select_from_score", "select_positions"]


def has_nonfinite(x: torch.Tensor) -> bool:
    """Whether ``x`` holds a NaN or an Inf (one reduction, one device sync).

    Fast backends whose kernels mix a block's values in one product (``0 * NaN`` is NaN) would
    spread a NaN further than this backend's Haar (additions only) does; they run such inputs
    through this backend's ops so that every backend keeps the one NaN/Inf behaviour above."""
    with torch.no_grad():
        return not bool(torch.isfinite(x).all())


def select_positions(coeffs: torch.Tensor, k: int) -> torch.Tensor:
    """Joint shrinkage: per image, the k positions with the largest channel energy.

    Args:
        coeffs: wavelet coefficients ``(N, C, P)`` with P = H' * W'.
    Returns:
        ``(N, k)`` int64 positions, sorted ascending (one support shared by all channels).
    """
    with torch.no_grad():
        # Scores in at least float32 so half-precision inputs rank like the float reference.
        score = coeffs.to(torch.promote_types(coeffs.dtype, torch.float32)).square().sum(dim=1)
        return select_from_score(score, k)


def select_from_score(score: torch.Tensor, k: int) -> torch.Tensor:
    """The k highest-ranked positions of ``score`` ``(N, P)`` as ``(N, k)`` int64, ascending.

    Non-finite scores rank as ``+inf``; ties go to the lowest position (module docstring).
    A stable descending sort states exactly that: equal keys keep their index order.
    """
    with torch.no_grad():
        key = torch.nan_to_num(score, nan=float("inf"))
        order = torch.sort(key, dim=1, descending=True, stable=True).indices[:, :k]
        return order.sort(dim=1).values


class ReferenceBackend(Backend):
    name = "reference"

    def unsupported_reason(self, x: torch.Tensor, config: WCCConfig) -> str | None:
        return None  # any device, any floating dtype

    def _coeffs(self, x: torch.Tensor, config: WCCConfig) -> torch.Tensor:
        # Before the padding: an impossible `levels` would otherwise allocate a huge grid.
        check_levels(x.shape[-2], x.shape[-1], config.levels)
        xp = pad_to_multiple(x, config.levels)
        n, c, hp, wp = xp.shape
        return haar2d(xp, config.levels).reshape(n, c, hp * wp)

    def keep_indices(self, x: torch.Tensor, config: WCCConfig) -> torch.Tensor:
        coeffs = self._coeffs(x, config)
        return select_positions(coeffs, keep_count(x.shape[-2], x.shape[-1], config))

    def wcc_conv(self, x, weight, bias, act_alpha, config, weight_codes=None):
        # weight_codes is a performance hint; the specification uses the float weight.
        n, c_in, h, w = x.shape
        c_out = weight.shape[0]
        hp, wp = padded_size(h, config.levels), padded_size(w, config.levels)

        coeffs = self._coeffs(x, config)  # (N, C_in, H'W')
        idx = select_positions(coeffs, keep_count(h, w, config))  # (N, k), a constant
        kept = coeffs.gather(2, idx.unsqueeze(1).expand(n, c_in, idx.shape[1]))
        kept = signed_act_quant(kept, act_alpha, config.act_bits)
        # The 1x1 conv mixes channels only and the transform acts per channel, so the GEMM on
        # the kept columns equals the conv in the wavelet domain, restricted to them.
        out_kept = torch.matmul(weight, kept)  # (N, C_out, k)
        full = out_kept.new_zeros(n, c_out, hp * wp)  # dtype follows the GEMM (autocast-safe)
        full = full.scatter(2, idx.unsqueeze(1).expand(n, c_out, idx.shape[1]), out_kept)
        y = ihaar2d(full.view(n, c_out, hp, wp), config.levels)[..., :h, :w]
        if bias is not None:
            # In the spatial domain: a constant bias stays constant (the official code adds it to
            # the wavelet coefficients, which turns it into a spatial pattern).
            y = y + bias.to(y.dtype).view(1, c_out, 1, 1)
        return y


REFERENCE = register_backend(ReferenceBackend(), priority=0)
