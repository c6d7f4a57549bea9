"""SynthStreets: a deterministic procedural stand-in for Cityscapes and KITTI depth.

One run renders ``num`` street scenes (see :mod:`wcc.data._synth_render` for the camera model
and the scene content) and writes each scene in *both* real layouts, so the same readers serve
real and synthetic data::

    {out}/cityscapes/leftImg8bit/{split}/{city}/{city}_{i:06d}_000019_leftImg8bit.png
    {out}/cityscapes/gtFine/{split}/{city}/{city}_{i:06d}_000019_gtFine_labelIds.png
    {out}/kitti/synth/synth_drive_{d:04d}_sync/image_02/data/{i:010d}.png
    {out}/kitti/synth/synth_drive_{d:04d}_sync/proj_depth/groundtruth/image_02/{i:010d}.png
    {out}/kitti/splits/{train,val}.txt        (Eigen/monodepth2 split-file format)
    {out}/synthstreets.json                   (manifest; "complete": true is written last)

Drive 0001 holds the train scenes, drive 0002 the val scenes. Labels are Cityscapes labelIds;
depth is uint16 ``round(metres * 256)`` with 0 where there is no ground truth (sky, the ego
vehicle's bonnet, beyond 100 m).

Guarantees:

- Deterministic: the content of scene ``i`` depends only on ``(seed, i)`` and the size, so the
  same arguments give byte-identical files.
- Atomic: every file is written under a temporary name and renamed; the manifest is marked
  complete only after the last file. An interrupted run is resumed by rerunning it (files
  already present are kept, being identical); a complete output with the same arguments is a
  no-op; an output made with different arguments is refused rather than mixed.

Command line: ``python -m wcc.data.synthetic --out DIR --num N --size HxW --seed S``.
Numbers obtained on SynthStreets are never Cityscapes or KITTI numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from wcc.data import _synth_render as _render
from wcc.data._io import encode_depth, png_bytes, write_bytes_atomic, write_json_atomic
from wcc.data.kitti import KittiItem, write_split_file

__all__ = [
    "GENERATOR_VERSION",
    "MANIFEST_NAME",
    "generate",
    "ensure_synthstreets",
    "render",
    "scene_files",
    "main",
]

#: Bumped whenever the rendering changes, so outputs of another version are not mixed in.
GENERATOR_VERSION = 1
MANIFEST_NAME = "synthstreets.json"
_TRAIN_CITIES = ("synthtown", "synthburg", "synthville")
_VAL_CITY = "synthcity"
_KITTI_DATE = "synth"
_PNG_LEVEL = 1  # fast zlib level: generation speed matters more than a few MB of disk


def render(index: int, seed: int = 0,
           size: tuple[int, int] = (256, 512)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render scene ``index`` of seed ``seed``: ``(image uint8 (H, W, 3), labelIds uint8 (H, W),
    depth float32 (H, W) metres, 0 = none)``. Pure function of its arguments."""
    height, width = size
    rng = np.random.default_rng([seed, index])
    return _render.render_scene(rng, height, width)


def _split_counts(num: int, val_fraction: float) -> tuple[int, int]:
    n_val = int(round(num * val_fraction))
    if num >= 2 and 0 < val_fraction < 1:
        n_val = min(max(n_val, 1), num - 1)
    return num - n_val, n_val


def scene_files(out: Path, index: int, num_train: int) -> dict[str, Path]:
    """Paths of scene ``index``'s four files (train scenes are ``0 .. num_train - 1``)."""
    train = index < num_train
    split = "train" if train else "val"
    city = _TRAIN_CITIES[index % len(_TRAIN_CITIES)] if train else _VAL_CITY
    stem = f"{city}_{index:06d}_000019"
    cs = out / "cityscapes"
    drive = Path(_KITTI_DATE, f"{_KITTI_DATE}_drive_{1 if train else 2:04d}_sync")
    kitti = out / "kitti" / drive
    return {
        "cs_image": cs / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png",
        "cs_label": cs / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png",
        "kitti_image": kitti / "image_02" / "data" / f"{index:010d}.png",
        "kitti_depth": kitti / "proj_depth" / "groundtruth" / "image_02" / f"{index:010d}.png",
        "kitti_folder": drive,
    }


def _params(num: int, size: tuple[int, int], seed: int, val_fraction: float) -> dict[str, Any]:
    return {"num": num, "height": size[0], "width": size[1], "seed": seed, "val_fraction": val_fraction}


def _check_args(num: int, size: tuple[int, int], seed: int, val_fraction: float) -> None:
    if isinstance(num, bool) or not isinstance(num, int) or num < 1:
        raise ValueError(f"num must be a positive int, got {num!r}")
    if len(size) != 2 or min(size) < 32:
        raise ValueError(f"size must be (H, W) with H, W >= 32, got {size!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction!r}")


def _read_manifest(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read SynthStreets manifest {path}: {exc}; delete the folder and rerun") from exc


def generate(
    out: str | os.PathLike[str],
    num: int,
    size: tuple[int, int] = (256, 512),
    seed: int = 0,
    *,
    val_fraction: float = 0.2,
    progress: bool = False,
) -> dict[str, Any]:
    """Write ``num`` SynthStreets scenes under ``out`` (layout in the module docstring).

    ``val_fraction`` of the scenes (at least one when ``num >= 2``) go to the val split, the
    rest to train. Returns the manifest dict. Refuses (``FileExistsError``) a non-empty ``out``
    that is not a SynthStreets output, or one generated with other arguments.
    """
    size = (int(size[0]), int(size[1]))
    _check_args(num, size, seed, val_fraction)
    out = Path(out)
    params = _params(num, size, seed, val_fraction)
    manifest_path = out / MANIFEST_NAME
    old = _read_manifest(manifest_path)
    if old is not None:
        if old.get("params") != params or old.get("version") != GENERATOR_VERSION:
            raise FileExistsError(
                f"{out} holds SynthStreets v{old.get('version')} generated with {old.get('params')}, "
                f"not v{GENERATOR_VERSION} {params}; use another --out or delete it"
            )
        if old.get("complete") is True:
            return old
    elif out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(
            f"{out} is not empty and has no {MANIFEST_NAME}; refusing to write SynthStreets into it"
        )

    num_train, num_val = _split_counts(num, val_fraction)
    manifest: dict[str, Any] = {
        "generator": "synthstreets",
        "version": GENERATOR_VERSION,
        "params": params,
        "complete": False,
        "num_train": num_train,
        "num_val": num_val,
        "cityscapes_root": "cityscapes",
        "kitti_root": "kitti",
        "kitti_splits": {"train": "kitti/splits/train.txt", "val": "kitti/splits/val.txt"},
        "label_ids": sorted(_render.PRODUCED_LABEL_IDS),
        "max_gt_depth_m": _render.MAX_GT_DEPTH,
        "note": "synthetic stand-in; its numbers are never Cityscapes or KITTI numbers",
    }
    write_json_atomic(manifest_path, manifest)

    items: dict[str, list[KittiItem]] = {"train": [], "val": []}
    start = time.perf_counter()
    done = 0
    for i in range(num):
        files = scene_files(out, i, num_train)
        items["train" if i < num_train else "val"].append(KittiItem(str(files["kitti_folder"]), i, "l"))
        paths = [p for k, p in files.items() if k != "kitti_folder"]
        if all(p.is_file() for p in paths):
            continue  # left by an interrupted run of the same arguments: identical by determinism
        image, label, depth = render(i, seed, size)
        rgb = png_bytes(image, _PNG_LEVEL)  # encoded once, written to both layouts
        write_bytes_atomic(files["cs_image"], rgb)
        write_bytes_atomic(files["cs_label"], png_bytes(label, _PNG_LEVEL))
        write_bytes_atomic(files["kitti_image"], rgb)
        write_bytes_atomic(files["kitti_depth"], png_bytes(encode_depth(depth), _PNG_LEVEL))
        done += 1
        if progress and (done % 50 == 0 or i == num - 1):
            rate = done / max(time.perf_counter() - start, 1e-9)
            print(f"\r{i + 1}/{num} scenes ({rate:.1f} scenes/s)", end="", file=sys.stderr, flush=True)
    if progress and done:
        print(file=sys.stderr)
    for split, lst in items.items():
        write_split_file(out / "kitti" / "splits" / f"{split}.txt", lst)
    manifest["complete"] = True
    write_json_atomic(manifest_path, manifest)
    return manifest


def ensure_synthstreets(
    root: str | os.PathLike[str],
    num: int = 100,
    size: tuple[int, int] = (256, 512),
    seed: int = 0,
    *,
    val_fraction: float = 0.2,
    progress: bool = False,
) -> dict[str, Any]:
    """Return the manifest of a complete SynthStreets output at ``root``, generating (or
    finishing) it first when needed. Same arguments and guarantees as :func:`generate`."""
    return generate(root, num, size, seed, val_fraction=val_fraction, progress=progress)


def parse_size(text: str) -> tuple[int, int]:
    """``"256x512"`` -> ``(256, 512)``: an argparse type for HxW sizes (a clear error otherwise)."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like HxW, e.g. 256x512, got {text!r}") from None
    return h, w


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m wcc.data.synthetic",
        description=(
            "Generate SynthStreets, a deterministic synthetic street-scene data set written in both "
            "the Cityscapes layout (leftImg8bit + gtFine labelIds) and the KITTI depth layout "
            "(image_02 + uint16 proj_depth/groundtruth, Eigen-format split files). Same arguments "
            "give byte-identical files; rerunning a complete output is a no-op and an interrupted "
            "one is resumed."
        ),
        epilog="Example: python -m wcc.data.synthetic --out data/synthstreets --num 500 --size 256x512 --seed 0",
    )
    parser.add_argument("--out", required=True, type=Path,
                        help="output folder (created; must be empty or a SynthStreets output)")
    parser.add_argument("--num", required=True, type=int, help="number of scenes (train + val)")
    parser.add_argument("--size", type=parse_size, default=(256, 512), help="image size HxW (default 256x512)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--val-fraction", type=float, default=0.2, help="fraction of scenes in val (default 0.2)")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        manifest = generate(args.out, args.num, args.size, args.seed,
                            val_fraction=args.val_fraction, progress=not args.quiet)
    except (ValueError, FileExistsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not args.quiet:
        elapsed = time.perf_counter() - start
        print(f"SynthStreets at {args.out}: {manifest['num_train']} train + {manifest['num_val']} val scenes "
              f"({elapsed:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
