"""Semantic segmentation metrics: one confusion matrix accumulated over a whole split.

Conventions follow the official Cityscapes pixel-level evaluation
(``cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling``), which the tests run side by
side with this class:

- pixels whose ground truth is ``ignore_index`` do not count at all;
- a prediction outside ``0 .. num_classes - 1`` (e.g. 255, or a labelId the official script
  ignores) is a miss for the ground-truth class (a false negative) and a false positive for
  nobody;
- ``IoU_c = TP / (TP + FP + FN)``; a class with ``TP + FP + FN = 0`` (absent from both ground
  truth and prediction) has IoU NaN and is left out of the mean: mIoU = mean of the non-NaN IoUs.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch

__all__ = ["SegmentationMetric"]


class SegmentationMetric:
    """Confusion-matrix accumulator for semantic segmentation.

    Args:
        num_classes: number of evaluated classes (19 for Cityscapes trainIds).
        ignore_index: ground-truth value excluded from evaluation (255).
        class_names: names used as keys of ``iou``; default: the Cityscapes names when
            ``num_classes == 19`` (from ``cityscapesscripts``), else ``"0"``, ``"1"``, ...

    Usage::

        metric = SegmentationMetric()
        for image, target in loader:
            metric.update(model(image), target)   # logits (N, C, H, W) or labels (N, H, W)
        result = metric.compute()                 # {"miou": ..., "iou": {"road": ..., ...}, ...}
    """

    def __init__(self, num_classes: int = 19, ignore_index: int = 255,
                 class_names: Sequence[str] | None = None) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if 0 <= ignore_index < num_classes:
            raise ValueError(f"ignore_index {ignore_index} collides with a class id (0..{num_classes - 1})")
        if class_names is None:
            if num_classes == 19:
                from wcc.data.cityscapes import class_names as cityscapes_names

                class_names = cityscapes_names()
            else:
                class_names = [str(i) for i in range(num_classes)]
        if len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class names for {num_classes} classes")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.class_names = tuple(class_names)
        self.reset()

    def reset(self) -> None:
        """Forget everything accumulated so far."""
        # Rows: ground truth 0..C-1. Columns: prediction 0..C-1, plus column C for "any other
        # prediction", which is a false negative for its row and a false positive for no class.
        self.confusion = torch.zeros(self.num_classes, self.num_classes + 1, dtype=torch.int64)

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch.

        ``pred``: integer labels with the shape of ``target``, or scores ``(N, C, H, W)`` for a
        target ``(N, H, W)`` (argmax over dim 1). ``target``: integer ``(N, H, W)`` or ``(H, W)``
        with values in ``0 .. C-1`` or ``ignore_index``; anything else is an error.
        """
        if pred.is_floating_point() or pred.dim() == target.dim() + 1:
            if pred.dim() != target.dim() + 1 or pred.shape[1] != self.num_classes:
                raise ValueError(
                    f"float predictions must be scores (N, {self.num_classes}, H, W) for a target "
                    f"{tuple(target.shape)}, got {tuple(pred.shape)}; pass integer labels otherwise"
                )
            pred = pred.argmax(dim=1)
        if pred.shape != target.shape:
            raise ValueError(f"pred shape {tuple(pred.shape)} differs from target shape {tuple(target.shape)}")
        if target.is_floating_point() or pred.is_floating_point():
            raise TypeError(f"labels must be integer tensors, got {pred.dtype} and {target.dtype}")
        target = target.reshape(-1).to(torch.int64)
        pred = pred.reshape(-1).to(device=target.device, dtype=torch.int64)
        keep = target != self.ignore_index
        target, pred = target[keep], pred[keep]
        if target.numel() and (int(target.min()) < 0 or int(target.max()) >= self.num_classes):
            bad = torch.unique(target[(target < 0) | (target >= self.num_classes)])[:10].tolist()
            raise ValueError(
                f"target values {bad} are neither classes 0..{self.num_classes - 1} nor "
                f"ignore_index={self.ignore_index}; map labelIds to trainIds first"
            )
        other = self.num_classes
        pred = torch.where((pred >= 0) & (pred < self.num_classes), pred, torch.full_like(pred, other))
        cols = self.num_classes + 1
        counts = torch.bincount(target * cols + pred, minlength=self.num_classes * cols)
        self.confusion += counts.reshape(self.num_classes, cols).cpu()

    def compute(self) -> dict[str, Any]:
        """Scores of everything accumulated since the last :meth:`reset`.

        Returns ``miou`` (float, mean of non-NaN IoUs), ``iou`` (``{class name: float or NaN}``
        in class-id order), ``pixel_accuracy`` (float) and ``num_pixels`` (evaluated pixels).
        """
        conf = self.confusion.to(torch.float64)
        tp = conf.diagonal()
        gt_total = conf.sum(dim=1)  # TP + FN (includes the "other" column)
        pred_total = conf[:, : self.num_classes].sum(dim=0)  # TP + FP over evaluated gt rows
        denom = gt_total + pred_total - tp
        iou = [float(t / d) if d > 0 else math.nan for t, d in zip(tp.tolist(), denom.tolist())]
        valid = [v for v in iou if not math.isnan(v)]
        total = float(gt_total.sum())
        return {
            "miou": sum(valid) / len(valid) if valid else math.nan,
            "iou": dict(zip(self.class_names, iou)),
            "pixel_accuracy": float(tp.sum()) / total if total else math.nan,
            "num_pixels": int(total),
        }
