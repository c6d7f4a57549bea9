"""KITTI depth reader: raw-drive RGB plus annotated uint16 depth (SynthStreets writes the same).

Layout (one consistent layout, docs/design.md §5)::

    RGB:   {root}/{date}/{date}_drive_{NNNN}_sync/image_02/data/{frame:010d}.png
    depth: {root}/{date}/{date}_drive_{NNNN}_sync/proj_depth/groundtruth/image_02/{frame:010d}.png

(``image_03`` for the right camera.) The official depth-annotated benchmark ships its ground
truth separately as ``{gt_root}/{train,val}/{drive}_sync/proj_depth/groundtruth/image_02/``;
pass ``gt_root=`` to read it from there instead (both ``train/`` and ``val/`` are searched).

Depth PNGs: uint16, metres = value / 256, 0 = no ground truth.

Split files use the monodepth2 / Eigen format, one image per line::

    2011_09_26/2011_09_26_drive_0002_sync 0000000069 l

(folder relative to the root, frame number, side ``l``/``r``). The Eigen test split
(``eigen/test_files.txt``, 697 lines, 652 with annotated depth) cannot be bundled; pass its path.
SynthStreets writes ``{root}/splits/train.txt`` and ``val.txt`` in this format, and a split
*name* is looked up as ``{root}/splits/{name}.txt``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Literal, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from wcc.data._io import DatasetLayoutError, check_same_size, read_depth_png, read_rgb, write_bytes_atomic
from wcc.data.transforms import PairTransform, eval_transform

__all__ = [
    "KITTI_LAYOUT",
    "KittiItem",
    "parse_split_lines",
    "read_split_file",
    "write_split_file",
    "KittiDepth",
]

KITTI_LAYOUT = (
    "RGB {root}/{date}/{drive}_sync/image_02/data/{frame:010d}.png and depth "
    "{root}/{date}/{drive}_sync/proj_depth/groundtruth/image_02/{frame:010d}.png "
    "(or depth under {gt_root}/{train,val}/{drive}_sync/proj_depth/groundtruth/image_02/ with gt_root=)"
)
_CAMERA = {"l": "image_02", "r": "image_03"}


@dataclass(frozen=True)
class KittiItem:
    """One line of a split file: ``folder`` (``{date}/{drive}_sync``), ``frame``, ``side``."""

    folder: str
    frame: int
    side: str = "l"

    def __post_init__(self) -> None:
        if self.side not in _CAMERA:
            raise ValueError(f"side must be 'l' or 'r', got {self.side!r}")
        if self.frame < 0:
            raise ValueError(f"frame must be >= 0, got {self.frame}")

    @property
    def camera(self) -> str:
        return _CAMERA[self.side]

    def line(self) -> str:
        return f"{self.folder} {self.frame:010d} {self.side}"


def parse_split_lines(lines: Iterable[str], source: str = "<list>") -> list[KittiItem]:
    """Parse split-file lines (blank lines skipped); a malformed line is reported as
    ``source:lineno``."""
    items = []
    for n, raw in enumerate(lines, start=1):
        parts = raw.split()
        if not parts:
            continue
        if len(parts) not in (2, 3) or not parts[1].isdigit() or (len(parts) == 3 and parts[2] not in _CAMERA):
            raise ValueError(
                f"{source}:{n}: malformed split line {raw.strip()!r}; expected "
                "'{date}/{drive}_sync {frame} {l|r}', e.g. '2011_09_26/2011_09_26_drive_0002_sync 0000000069 l'"
            )
        items.append(KittiItem(parts[0].strip("/"), int(parts[1]), parts[2] if len(parts) == 3 else "l"))
    return items


def read_split_file(path: str | os.PathLike[str]) -> list[KittiItem]:
    """Read an Eigen/monodepth2-format split file (see module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"split file {path} does not exist")
    return parse_split_lines(path.read_text().splitlines(), str(path))


def write_split_file(path: str | os.PathLike[str], items: Sequence[KittiItem]) -> None:
    """Write items in split-file format, atomically."""
    write_bytes_atomic(path, "".join(item.line() + "\n" for item in items).encode())


class KittiDepth(Dataset):
    """KITTI RGB + annotated depth as ``(image, depth)`` pairs.

    Args:
        root: raw-data root (see module docstring for the layout).
        split: a split file path, a split name (``{root}/splits/{name}.txt``), or a list of
            :class:`KittiItem` / split lines.
        gt_root: root of the depth-annotated benchmark (``{gt_root}/{train,val}/{drive}_sync/...``);
            default: the ground truth sits next to the RGB under ``root``.
        transform: paired transform on the [0, 1] image and the depth; must normalise.
            Default: :func:`eval_transform` resizing the image only to ``size``: the ground truth
            stays at native resolution and the caller upsamples predictions to it (monodepth2).
        size: ``(H, W)`` for the image in the default transform.
        max_items: keep the first ``max_items`` items of the split (after dropping missing gt).
        missing_gt: ``"skip"`` drops items without a depth PNG (the Eigen split has 45 of 697;
            their count is in :attr:`skipped`), ``"error"`` raises.

    Items: ``image`` float32 ``(3, H, W)`` ImageNet-normalised; ``depth`` float32 ``(H0, W0)``
    metres, 0 = no ground truth.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str | os.PathLike[str] | Sequence[KittiItem | str],
        *,
        gt_root: str | os.PathLike[str] | None = None,
        transform: PairTransform | None = None,
        size: int | Sequence[int] | None = None,
        max_items: int | None = None,
        missing_gt: Literal["skip", "error"] = "skip",
    ) -> None:
        if transform is not None and size is not None:
            raise ValueError("give either transform or size (size configures the default eval transform)")
        if missing_gt not in ("skip", "error"):
            raise ValueError(f"missing_gt must be 'skip' or 'error', got {missing_gt!r}")
        if max_items is not None and max_items < 1:
            raise ValueError(f"max_items must be >= 1, got {max_items}")
        self.root = Path(root)
        self.gt_root = Path(gt_root) if gt_root is not None else None
        self.transform: PairTransform = (
            transform if transform is not None else eval_transform(size, resize_target=False)
        )
        if not self.root.is_dir():
            raise DatasetLayoutError(f"KITTI root {self.root} does not exist. Expected layout: {KITTI_LAYOUT}")
        if self.gt_root is not None and not any((self.gt_root / s).is_dir() for s in ("train", "val")):
            raise DatasetLayoutError(
                f"KITTI gt_root {self.gt_root} has neither train/ nor val/. Expected layout: {KITTI_LAYOUT}"
            )
        items = self._resolve_split(split)
        self.samples, self.skipped = self._find_samples(items, missing_gt)
        if max_items is not None:
            self.samples = self.samples[:max_items]

    def _resolve_split(self, split: str | os.PathLike[str] | Sequence[KittiItem | str]) -> list[KittiItem]:
        if isinstance(split, (str, os.PathLike)):
            path = Path(split)
            if not path.is_file():
                named = self.root / "splits" / f"{split}.txt"
                if not named.is_file():
                    raise FileNotFoundError(
                        f"split {str(split)!r} is neither a split file nor a name with a file at {named}"
                    )
                path = named
            items = read_split_file(path)
        else:
            items = [s if isinstance(s, KittiItem) else parse_split_lines([s])[0] for s in split]
        if not items:
            raise ValueError(f"split {split!r} lists no images")
        return items

    def _gt_path(self, item: KittiItem) -> Path:
        rel = Path("proj_depth", "groundtruth", item.camera, f"{item.frame:010d}.png")
        if self.gt_root is None:
            return self.root / item.folder / rel
        drive = Path(item.folder).name
        for sub in ("train", "val"):
            p = self.gt_root / sub / drive / rel
            if p.is_file():
                return p
        return self.gt_root / "train" / drive / rel  # reported as the expected place

    def _find_samples(self, items: list[KittiItem], missing_gt: str) -> tuple[list[tuple[Path, Path]], int]:
        samples = []
        missing_rgb = []
        missing_depth = []
        for item in items:
            rgb = self.root / item.folder / item.camera / "data" / f"{item.frame:010d}.png"
            gt = self._gt_path(item)
            if not rgb.is_file():
                missing_rgb.append(rgb)
            elif not gt.is_file():
                missing_depth.append(gt)
            else:
                samples.append((rgb, gt))
        if missing_rgb:
            raise DatasetLayoutError(
                f"KITTI root {self.root}: {len(missing_rgb)} of {len(items)} split images are missing; "
                f"first: {missing_rgb[0]}. Expected layout: {KITTI_LAYOUT}"
            )
        if missing_depth and (missing_gt == "error" or not samples):
            raise DatasetLayoutError(
                f"KITTI root {self.root}: {len(missing_depth)} of {len(items)} split images have no "
                f"depth ground truth; first expected at {missing_depth[0]}. Expected layout: {KITTI_LAYOUT}"
            )
        return samples, len(missing_depth)

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Raw ``(H, W, 3)`` uint8 image and ``(H, W)`` float32 depth in metres, untransformed."""
        rgb_path, gt_path = self.samples[index]
        image = read_rgb(rgb_path)
        depth = read_depth_png(gt_path)
        check_same_size(rgb_path, image, gt_path, depth)
        return image, depth

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, depth = self.load(index)
        img = torch.from_numpy(image).permute(2, 0, 1).to(torch.float32).div_(255.0)
        return self.transform(img, torch.from_numpy(depth))

    def __repr__(self) -> str:
        return f"KittiDepth(root={str(self.root)!r}, items={len(self)}, skipped={self.skipped})"
