"""Monocular depth metrics of Eigen et al., with the KITTI evaluation protocol (docs/design.md §6).

Per image:

1. valid pixels: ``min_depth < gt < max_depth`` (gt 0 means no ground truth), intersected with
   the Garg crop when ``crop="garg"``: rows ``int(0.40810811 H) : int(0.99189189 H)``, columns
   ``int(0.03594771 W) : int(0.96405229 W)`` (bounds truncated to integers);
2. optional median scaling on the valid pixels, ``pred *= median(gt) / median(pred)`` (for
   scale-ambiguous self-supervised models; the median of an even count is the mean of the two
   middle values, as ``numpy.median``);
3. predictions clipped to ``[min_depth, max_depth]``;
4. ``abs_rel = mean(|gt - pred| / gt)``, ``sq_rel = mean((gt - pred)^2 / gt)``,
   ``rmse = sqrt(mean((gt - pred)^2))``, ``rmse_log = sqrt(mean((ln gt - ln pred)^2))``,
   ``a1/a2/a3`` = fraction with ``max(gt / pred, pred / gt) < 1.25, 1.25^2, 1.25^3``.

A split's value is the mean over its images of the per-image values; images without a single
valid pixel are left out. Computation is in float64.
"""

from __future__ import annotations

from typing import Any, Literal

import torch

__all__ = ["DEPTH_METRIC_NAMES", "garg_crop_bounds", "per_image_depth_metrics", "depth_metrics", "DepthMetric"]

DEPTH_METRIC_NAMES = ("abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3")
_GARG = (0.40810811, 0.99189189, 0.03594771, 0.96405229)


def garg_crop_bounds(height: int, width: int) -> tuple[int, int, int, int]:
    """``(top, bottom, left, right)`` of the Garg crop, end-exclusive, truncated to ints."""
    return (int(_GARG[0] * height), int(_GARG[1] * height), int(_GARG[2] * width), int(_GARG[3] * width))


def _median(x: torch.Tensor) -> torch.Tensor:
    s, _ = torch.sort(x)
    n = s.numel()
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def _as_batch(t: torch.Tensor, name: str) -> torch.Tensor:
    if t.dim() == 4 and t.shape[1] == 1:
        t = t[:, 0]
    elif t.dim() == 2:
        t = t[None]
    if t.dim() != 3:
        raise ValueError(f"{name} must be (N, H, W), (N, 1, H, W) or (H, W), got {tuple(t.shape)}")
    return t


def per_image_depth_metrics(
    pred: torch.Tensor,
    gt: torch.Tensor,
    *,
    crop: Literal["garg"] | None = None,
    median_scaling: bool = False,
    min_depth: float = 1e-3,
    max_depth: float = 80.0,
) -> torch.Tensor:
    """Per-image metrics as a float64 tensor ``(M, 7)`` in :data:`DEPTH_METRIC_NAMES` order,
    one row per image that has valid pixels (``M <= N``). Arguments as :func:`depth_metrics`."""
    pred = _as_batch(pred, "pred")
    gt = _as_batch(gt, "gt")
    if pred.shape != gt.shape:
        raise ValueError(
            f"pred {tuple(pred.shape)} and gt {tuple(gt.shape)} differ; upsample predictions to the "
            "ground-truth resolution first"
        )
    if crop not in (None, "garg"):
        raise ValueError(f"crop must be 'garg' or None, got {crop!r}")
    if not 0 < min_depth < max_depth:
        raise ValueError(f"need 0 < min_depth < max_depth, got {min_depth}, {max_depth}")
    pred = pred.detach().to(torch.float64)
    gt = gt.detach().to(device=pred.device, dtype=torch.float64)
    _, height, width = gt.shape
    region = torch.zeros(height, width, dtype=torch.bool, device=gt.device)
    if crop == "garg":
        top, bottom, left, right = garg_crop_bounds(height, width)
        region[top:bottom, left:right] = True
    else:
        region[:] = True

    rows = []
    for i in range(gt.shape[0]):
        valid = (gt[i] > min_depth) & (gt[i] < max_depth) & region
        if not bool(valid.any()):
            continue
        g, p = gt[i][valid], pred[i][valid]
        if not bool(torch.isfinite(p).all()):
            raise ValueError(f"image {i}: prediction has NaN/inf at valid ground-truth pixels")
        if median_scaling:
            mp = _median(p)
            if not float(mp) > 0:
                raise ValueError(f"image {i}: median prediction is {float(mp)}; cannot median-scale")
            p = p * (_median(g) / mp)
        p = p.clamp(min_depth, max_depth)
        ratio = torch.maximum(g / p, p / g)
        err = g - p
        rows.append(torch.stack([
            (err.abs() / g).mean(),
            (err ** 2 / g).mean(),
            (err ** 2).mean().sqrt(),
            ((g.log() - p.log()) ** 2).mean().sqrt(),
            (ratio < 1.25).double().mean(),
            (ratio < 1.25 ** 2).double().mean(),
            (ratio < 1.25 ** 3).double().mean(),
        ]))
    if not rows:
        return torch.zeros(0, len(DEPTH_METRIC_NAMES), dtype=torch.float64)
    return torch.stack(rows).cpu()


def depth_metrics(
    pred: torch.Tensor,
    gt: torch.Tensor,
    *,
    crop: Literal["garg"] | None = None,
    median_scaling: bool = False,
    min_depth: float = 1e-3,
    max_depth: float = 80.0,
) -> dict[str, float]:
    """Eigen depth metrics averaged over the images of a batch.

    Args:
        pred: predicted depth in metres, ``(N, H, W)`` (or ``(N, 1, H, W)``, ``(H, W)``), at the
            ground-truth resolution.
        gt: ground-truth depth in metres, same shape; values outside ``(min_depth, max_depth)``
            (0 = none) are not evaluated.
        crop: ``"garg"`` for the Eigen-split crop, or None.
        median_scaling: per-image median scaling (self-supervised models only).

    Returns ``{abs_rel, sq_rel, rmse, rmse_log, a1, a2, a3, num_images}``, ``num_images`` being
    the number of images averaged (those with valid pixels). Raises ``ValueError`` when no image
    has a valid pixel.
    """
    per = per_image_depth_metrics(pred, gt, crop=crop, median_scaling=median_scaling,
                                  min_depth=min_depth, max_depth=max_depth)
    if per.shape[0] == 0:
        raise ValueError(
            f"no valid ground-truth pixels in any of the images (valid: {min_depth} < gt < {max_depth}"
            f"{', inside the Garg crop' if crop else ''})"
        )
    out = {name: float(v) for name, v in zip(DEPTH_METRIC_NAMES, per.mean(dim=0).tolist())}
    out["num_images"] = int(per.shape[0])
    return out


class DepthMetric:
    """Accumulates per-image depth metrics over a split (the split value is the mean over
    images, so batches of different sizes combine correctly). Keyword arguments as
    :func:`depth_metrics`."""

    def __init__(self, *, crop: Literal["garg"] | None = None, median_scaling: bool = False,
                 min_depth: float = 1e-3, max_depth: float = 80.0) -> None:
        self.kwargs: dict[str, Any] = dict(crop=crop, median_scaling=median_scaling, min_depth=min_depth,
                                           max_depth=max_depth)
        self.reset()

    def reset(self) -> None:
        self._sum = torch.zeros(len(DEPTH_METRIC_NAMES), dtype=torch.float64)
        self._count = 0
        self.skipped = 0  # images without a valid pixel

    @torch.no_grad()
    def update(self, pred: torch.Tensor, gt: torch.Tensor) -> None:
        per = per_image_depth_metrics(pred, gt, **self.kwargs)
        self._sum += per.sum(dim=0)
        self._count += per.shape[0]
        self.skipped += _as_batch(gt, "gt").shape[0] - per.shape[0]

    def compute(self) -> dict[str, float]:
        """Mean over all images seen; raises ``ValueError`` if none had a valid pixel."""
        if self._count == 0:
            raise ValueError("no image with valid ground-truth pixels has been seen")
        out = {name: float(v) / self._count for name, v in zip(DEPTH_METRIC_NAMES, self._sum.tolist())}
        out["num_images"] = self._count
        return out
