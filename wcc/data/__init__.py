"""Data sets for the paper's two tasks, real and synthetic.

- :class:`CityscapesSegmentation` (:mod:`wcc.data.cityscapes`): Cityscapes fine annotations,
  labelIds mapped to the 19 trainIds through ``cityscapesscripts``' label table.
- :class:`KittiDepth` (:mod:`wcc.data.kitti`): KITTI RGB with annotated uint16 depth, read through
  Eigen/monodepth2-format split files.
- SynthStreets (:mod:`wcc.data.synthetic`): a deterministic generator that writes both layouts,
  so the pipeline runs anywhere (``python -m wcc.data.synthetic --help``).
- :mod:`wcc.data.transforms`: paired training/evaluation transforms in plain torch.

The Garg crop used at KITTI evaluation lives with the depth metrics
(:func:`wcc.metrics.depth_metrics`, ``crop="garg"``).
"""

from __future__ import annotations

from typing import Any

from wcc.data._io import DatasetLayoutError, decode_depth, encode_depth
from wcc.data.cityscapes import (
    IGNORE_INDEX,
    NUM_CLASSES,
    CityscapesSegmentation,
    class_names,
    label_ids_to_train_ids,
    train_ids_to_label_ids,
)
from wcc.data.kitti import KittiDepth, KittiItem, read_split_file, write_split_file
from wcc.data.transforms import eval_transform, train_transform

__all__ = [
    "DatasetLayoutError",
    "CityscapesSegmentation",
    "KittiDepth",
    "KittiItem",
    "read_split_file",
    "write_split_file",
    "NUM_CLASSES",
    "IGNORE_INDEX",
    "class_names",
    "label_ids_to_train_ids",
    "train_ids_to_label_ids",
    "encode_depth",
    "decode_depth",
    "train_transform",
    "eval_transform",
    "generate_synthstreets",
    "ensure_synthstreets",
]

# The generator is imported on first use: importing it here would make
# `python -m wcc.data.synthetic` warn that the module was imported before being run.
_LAZY = {"generate_synthstreets": "generate", "ensure_synthstreets": "ensure_synthstreets"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from wcc.data import synthetic

        return getattr(synthetic, _LAZY[name])
    raise AttributeError(f"module 'wcc.data' has no attribute {name!r}")
