"""Losses of the two tasks."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["segmentation_loss", "silog_loss"]


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = 255) -> torch.Tensor:
    """Cross-entropy; logits ``(N, K, h, w)`` are upsampled to the target's ``(N, H, W)``."""
    if logits.shape[-2:] != target.shape[-2:]:
        logits = F.interpolate(logits, size=target.shape[-2:], mode="bilinear", align_corners=False)
    return F.cross_entropy(logits.float(), target, ignore_index=ignore_index)


def silog_loss(pred: torch.Tensor, gt: torch.Tensor, variance_focus: float = 0.85,
               min_depth: float = 1e-3, max_depth: float = 80.0) -> torch.Tensor:
    """Scale-invariant log loss (Eigen et al.) on pixels with ground truth.

    We train the depth network *supervised* on annotated depth: the paper's monodepth2 setup is
    self-supervised from stereo/video, which single annotated frames (and SynthStreets) do not
    provide. pred ``(N, 1, h, w)`` or ``(N, h, w)`` metres; gt ``(N, H, W)`` metres, 0 = none.
    """
    if pred.dim() == 4:
        pred = pred[:, 0]
    if pred.shape[-2:] != gt.shape[-2:]:
        pred = F.interpolate(pred[:, None], size=gt.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    valid = (gt > min_depth) & (gt < max_depth)
    if not valid.any():
        return pred.sum() * 0.0  # keeps the graph; a batch without ground truth teaches nothing
    d = torch.log(pred.float()[valid].clamp(min=min_depth)) - torch.log(gt[valid])
    return torch.sqrt((d.square().mean() - variance_focus * d.mean().square()).clamp(min=1e-12)) * 10.0
