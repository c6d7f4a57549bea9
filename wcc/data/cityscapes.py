"""Cityscapes semantic segmentation reader (real layout; SynthStreets writes the same layout).

Layout (docs/design.md §5)::

    {root}/leftImg8bit/{split}/{city}/{city}_{seq:06d}_{frame:06d}_leftImg8bit.png
    {root}/gtFine/{split}/{city}/{city}_{seq:06d}_{frame:06d}_gtFine_labelIds.png

Ground truth is read as Cityscapes *labelIds* and mapped to the 19 *trainIds* (255 = ignore)
through the official label table of the ``cityscapesscripts`` package, not a hand-copied one.
Accepted label ids are exactly the non-negative ids of that table, 0..33 (the table's only other
entry, ``license plate`` = -1, cannot occur in a uint8 PNG); any other value is reported with the
file name.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from wcc.data._io import DatasetLayoutError, check_same_size, read_label_png, read_rgb
from wcc.data.transforms import PairTransform, eval_transform

__all__ = [
    "NUM_CLASSES",
    "IGNORE_INDEX",
    "CITYSCAPES_LAYOUT",
    "class_names",
    "label_ids_to_train_ids",
    "train_ids_to_label_ids",
    "CityscapesSegmentation",
]

NUM_CLASSES = 19
IGNORE_INDEX = 255
CITYSCAPES_LAYOUT = (
    "{root}/leftImg8bit/{split}/{city}/{city}_{seq:06d}_{frame:06d}_leftImg8bit.png and "
    "{root}/gtFine/{split}/{city}/{city}_{seq:06d}_{frame:06d}_gtFine_labelIds.png"
)
_SPLITS = ("train", "val")


class _LabelTable:
    """Lookup tables built once from ``cityscapesscripts.helpers.labels``."""

    def __init__(self) -> None:
        try:
            from cityscapesscripts.helpers import labels as cs_labels
        except ImportError as exc:  # optional dependency (the "data" extra)
            raise ImportError(
                "the Cityscapes label table comes from the 'cityscapesscripts' package; "
                "install it with `pip install 'wcc-bench[data]'` (or `pip install cityscapesscripts`)"
            ) from exc
        self.to_train = np.full(256, IGNORE_INDEX, dtype=np.uint8)
        self.valid = np.zeros(256, dtype=bool)
        names: list[str | None] = [None] * NUM_CLASSES
        to_label = np.zeros(256, dtype=np.uint8)  # trainId -> labelId; ignore -> 0 "unlabeled"
        for lab in cs_labels.labels:
            if lab.id < 0:
                continue  # license plate (-1): not representable in a uint8 label image
            self.valid[lab.id] = True
            if 0 <= lab.trainId < NUM_CLASSES:
                self.to_train[lab.id] = lab.trainId
                names[lab.trainId] = lab.name
                to_label[lab.trainId] = lab.id
        if any(n is None for n in names):
            raise RuntimeError(f"cityscapesscripts label table lacks trainIds: {names}")
        self.names: tuple[str, ...] = tuple(n for n in names if n is not None)
        self.to_label = to_label
        self.accepted = [int(i) for i in np.flatnonzero(self.valid)]


@functools.lru_cache(maxsize=1)
def _table() -> _LabelTable:
    return _LabelTable()


def class_names() -> tuple[str, ...]:
    """The 19 evaluated class names in trainId order (``road``, ``sidewalk``, ..., ``bicycle``)."""
    return _table().names


def label_ids_to_train_ids(label_ids: np.ndarray, source: str | os.PathLike[str] = "<array>") -> np.ndarray:
    """Map a Cityscapes labelId image ``(H, W)`` to trainIds (uint8, 255 = ignore).

    Raises ``ValueError`` naming ``source`` and the offending ids when a value is not a labelId
    of the official table (accepted: 0..33).
    """
    table = _table()
    arr = np.asarray(label_ids)
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{source}: label ids must be integers, got dtype {arr.dtype}")
    in_range = (arr >= 0) & (arr < 256)
    ok = in_range.copy()
    ok[in_range] = table.valid[arr[in_range]]
    if not ok.all():
        bad = np.unique(arr[~ok])
        shown = ", ".join(str(int(b)) for b in bad[:10]) + (" ..." if bad.size > 10 else "")
        raise ValueError(
            f"{source}: label ids {shown} are not Cityscapes labelIds "
            f"({int((~ok).sum())} pixels); accepted ids are {table.accepted[0]}..{table.accepted[-1]} "
            "(cityscapesscripts.helpers.labels). Is this a trainId or colour image?"
        )
    return table.to_train[arr]


def train_ids_to_label_ids(train_ids: np.ndarray) -> np.ndarray:
    """Inverse map for writing predictions: trainId -> labelId (uint8); anything outside
    0..18 (such as 255) becomes 0, ``unlabeled``."""
    arr = np.asarray(train_ids).astype(np.int64)
    out = np.zeros(arr.shape, dtype=np.uint8)
    valid = (arr >= 0) & (arr < NUM_CLASSES)
    out[valid] = _table().to_label[arr[valid]]
    return out


def _layout_error(root: Path, missing: Path, what: str) -> DatasetLayoutError:
    return DatasetLayoutError(
        f"Cityscapes root {root}: {what} {missing} does not exist. Expected layout: {CITYSCAPES_LAYOUT}"
    )


class CityscapesSegmentation(Dataset):
    """Cityscapes fine annotations as ``(image, target)`` pairs.

    Args:
        root: dataset root holding ``leftImg8bit/`` and ``gtFine/`` (see module docstring).
        split: ``"train"`` or ``"val"``.
        transform: paired transform (:mod:`wcc.data.transforms`) applied to the [0, 1] image and
            the trainId target; it must normalise. Default: :func:`eval_transform` with ``size``.
        size: ``(H, W)`` to resize to for evaluation (bilinear image, nearest target); only with
            the default transform.
        max_items: keep only the first ``max_items`` images (sorted by path).

    Items: ``image`` float32 ``(3, H, W)`` ImageNet-normalised; ``target`` int64 ``(H, W)``
    trainIds in 0..18 or 255 (ignore).

    The root is validated at construction: a missing folder or ground-truth file raises
    :class:`DatasetLayoutError` naming the path and the expected layout.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str = "train",
        *,
        transform: PairTransform | None = None,
        size: int | Sequence[int] | None = None,
        max_items: int | None = None,
    ) -> None:
        if split not in _SPLITS:
            raise ValueError(f"split must be one of {_SPLITS}, got {split!r}")
        if transform is not None and size is not None:
            raise ValueError("give either transform or size (size configures the default eval transform)")
        if max_items is not None and max_items < 1:
            raise ValueError(f"max_items must be >= 1, got {max_items}")
        self.root = Path(root)
        self.split = split
        self.transform: PairTransform = transform if transform is not None else eval_transform(size)
        _table()  # fail early (ImportError) when cityscapesscripts is missing
        self.samples = self._find_samples(max_items)

    def _find_samples(self, max_items: int | None) -> list[tuple[Path, Path]]:
        root = self.root
        if not root.is_dir():
            raise _layout_error(root, root, "the root folder")
        img_dir = root / "leftImg8bit" / self.split
        gt_dir = root / "gtFine" / self.split
        for d in (img_dir, gt_dir):
            if not d.is_dir():
                raise _layout_error(root, d, "folder")
        images = sorted(img_dir.glob("*/*_leftImg8bit.png"))
        if not images:
            raise DatasetLayoutError(
                f"Cityscapes root {root}: no images matching {img_dir}/*/*_leftImg8bit.png. "
                f"Expected layout: {CITYSCAPES_LAYOUT}"
            )
        if max_items is not None:
            images = images[:max_items]
        samples = []
        missing = []
        for img in images:
            stem = img.name[: -len("_leftImg8bit.png")]
            gt = gt_dir / img.parent.name / f"{stem}_gtFine_labelIds.png"
            if not gt.is_file():
                missing.append(gt)
            samples.append((img, gt))
        if missing:
            raise DatasetLayoutError(
                f"Cityscapes root {root}: {len(missing)} of {len(images)} images have no ground "
                f"truth; first missing: {missing[0]}. Expected layout: {CITYSCAPES_LAYOUT}"
            )
        return samples

    def __len__(self) -> int:
        return len(self.samples)

    def name(self, index: int) -> str:
        """``{city}_{seq}_{frame}`` of item ``index`` (for naming prediction files)."""
        return self.samples[index][0].name[: -len("_leftImg8bit.png")]

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Raw ``(H, W, 3)`` uint8 image and ``(H, W)`` uint8 trainIds, untransformed."""
        img_path, gt_path = self.samples[index]
        image = read_rgb(img_path)
        label = read_label_png(gt_path)
        check_same_size(img_path, image, gt_path, label)
        return image, label_ids_to_train_ids(label, gt_path)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, train_ids = self.load(index)
        img = torch.from_numpy(image).permute(2, 0, 1).to(torch.float32).div_(255.0)
        target = torch.from_numpy(train_ids.astype(np.int64))
        return self.transform(img, target)

    def __repr__(self) -> str:
        return f"CityscapesSegmentation(root={str(self.root)!r}, split={self.split!r}, items={len(self)})"
