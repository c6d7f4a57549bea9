"""Evaluation metrics (docs/design.md §6).

- :class:`SegmentationMetric`: confusion matrix over a split, per-class IoU and mIoU, with the
  conventions of the official Cityscapes evaluation.
- :func:`depth_metrics` / :class:`DepthMetric`: Eigen depth metrics (abs_rel, sq_rel, rmse,
  rmse_log, a1-a3) with the KITTI protocol (valid range, Garg crop, optional median scaling).
"""

from __future__ import annotations

from wcc.metrics.depth import (
    DEPTH_METRIC_NAMES,
    DepthMetric,
    depth_metrics,
    garg_crop_bounds,
    per_image_depth_metrics,
)
from wcc.metrics.segmentation import SegmentationMetric

__all__ = [
    "SegmentationMetric",
    "depth_metrics",
    "per_image_depth_metrics",
    "DepthMetric",
    "DEPTH_METRIC_NAMES",
    "garg_crop_bounds",
]
