"""Losses of the two tasks."""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F

__all__ = ["segmentation_loss", "silog_loss", "class_frequencies", "class_weights"]


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = 255,
                      weight: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy; logits ``(N, K, h, w)`` are upsampled to the target's ``(N, H, W)``.

    ``weight`` ``(K,)``: per-class weights (:func:`class_weights`); the mean is then taken over the
    pixels' weights, as :func:`torch.nn.functional.cross_entropy` does, so only their ratios matter.
    """
    if logits.shape[-2:] != target.shape[-2:]:
        logits = F.interpolate(logits, size=target.shape[-2:], mode="bilinear", align_corners=False)
    return F.cross_entropy(logits.float(), target, weight=weight, ignore_index=ignore_index)


def class_frequencies(train_set: Sequence[tuple[Any, torch.Tensor]], num_classes: int,
                      ignore_index: int = 255) -> torch.Tensor:
    """Each class's share of the labelled pixels of ``train_set`` (items ``(image, target (H, W))``),
    float64 ``(num_classes,)``. Reads every item once: a few seconds for SynthStreets, minutes
    for Cityscapes' 2,975 training images."""
    counts = torch.zeros(num_classes, dtype=torch.float64)
    for i in range(len(train_set)):
        target = torch.as_tensor(train_set[i][1]).reshape(-1)
        target = target[target != ignore_index]
        if target.numel() and (int(target.min()) < 0 or int(target.max()) >= num_classes):
            raise ValueError(f"training item {i}: labels outside 0..{num_classes - 1} (and {ignore_index})")
        counts += torch.bincount(target, minlength=num_classes).double()
    if counts.sum() == 0:
        raise ValueError("the training set has no labelled pixel")
    return counts / counts.sum()


def class_weights(frequencies: torch.Tensor, scheme: str) -> torch.Tensor | None:
    """Per-class loss weights ``(K,)`` float32 for a ``Recipe.class_weights`` scheme, from
    :func:`class_frequencies`; None for ``"none"``.

    ``"sqrt-median-frequency"``: ``sqrt(median_f / f_c)`` over the classes present (for an even
    number of them, the lower of the two middle frequencies, as :func:`torch.median`). mIoU counts
    every class equally, but plain cross-entropy counts pixels, so a class of 0.1% of the pixels
    (a pole, a sign) barely moves the loss in a short training run. The full median-frequency
    weighting of SegNet (Badrinarayanan et al., 2017) gives a 0.1% class hundreds of times a road
    pixel's weight and trades much precision for recall; the square root keeps the ratio near 20.
    Classes absent from the training set get weight 1 (they never occur as targets).
    """
    if scheme == "none":
        return None
    if scheme != "sqrt-median-frequency":
        raise ValueError(f"unknown class weighting {scheme!r}; choose 'none' or 'sqrt-median-frequency'")
    present = frequencies > 0
    if not present.any():
        raise ValueError("no class is present in the training set")
    median = frequencies[present].median()
    weights = torch.ones_like(frequencies)
    weights[present] = (median / frequencies[present]).sqrt()
    return weights.float()


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
