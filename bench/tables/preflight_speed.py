"""Pre-flight speed on a Cityscapes-sized tree (2975 train + 500 val pairs; small images for the file
count), then the per-pair decode+check cost at 1024x2048 on a few full-size pairs, extrapolated.

    python -m bench.tables.preflight_speed /tmp/preflight-speed   # the folder is replaced

Generated files only (no Cityscapes needed); the full-size figure is an extrapolation, and says so.
Per-pair loads are timed by the suite's one harness (:func:`bench.timing.harness.time_callable`).
"""

from __future__ import annotations

import itertools
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["main"]


def _write_pair(rng: np.random.Generator, root: Path, split: str, city: str, i: int, h: int, w: int,
                smooth: bool) -> None:
    d_img, d_gt = root / "leftImg8bit" / split / city, root / "gtFine" / split / city
    d_img.mkdir(parents=True, exist_ok=True)
    d_gt.mkdir(parents=True, exist_ok=True)
    stem = f"{city}_{i:06d}_000019"
    if smooth:  # street-like: smooth gradients with mild noise (real leftImg8bit PNGs are ~2 MB)
        yy, xx = np.mgrid[0:h, 0:w]
        img = np.stack([(xx * 255 // w), (yy * 255 // h), ((xx + yy) * 127 // (h + w))], -1)
        img = (img + rng.integers(0, 24, (h, w, 3))).clip(0, 255).astype(np.uint8)
    else:
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    Image.fromarray(img).save(d_img / f"{stem}_leftImg8bit.png")
    lab = np.repeat(np.repeat(rng.integers(0, 34, (max(1, h // 64), max(1, w // 64))), 64, 0), 64, 1)[:h, :w]
    lab = np.pad(lab, ((0, h - lab.shape[0]), (0, w - lab.shape[1])), mode="edge").astype(np.uint8)
    Image.fromarray(lab).save(d_gt / f"{stem}_gtFine_labelIds.png")


def main(argv: list[str] | None = None) -> int:
    from bench.tables.preflight import check_samples
    from bench.timing.harness import time_callable
    from wcc.data.cityscapes import CityscapesSegmentation

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m bench.tables.preflight_speed DIR   (DIR is replaced)", file=sys.stderr)
        return 2
    base = Path(args[0])
    shutil.rmtree(base, ignore_errors=True)
    rng = np.random.default_rng(0)
    tree = base / "cs"
    t = time.perf_counter()
    for split, n in (("train", 2975), ("val", 500)):
        for i in range(n):
            _write_pair(rng, tree, split, f"city{i % 18:02d}", i, 32, 64, smooth=False)
    print(f"tree: 3475 pairs of 32x64 written in {time.perf_counter() - t:.1f} s")
    named = [("cityscapes/train", CityscapesSegmentation(tree, "train")),
             ("cityscapes/eval", CityscapesSegmentation(tree, "val"))]
    cache = base / "preflight-cache.json"
    workers = len(os.sched_getaffinity(0))
    for label in ("first pass (uncached)", "second pass (cached)"):
        t = time.perf_counter()  # one pass is a wall-clock duration, not a timed op
        problems = check_samples(named, cache=cache)
        print(f"{label}: {time.perf_counter() - t:.2f} s, {len(problems)} problems, {workers} worker threads")

    full = base / "full"
    for smooth in (True, False):
        for i in range(4):
            _write_pair(rng, full, "val", "smooth" if smooth else "noise", i, 1024, 2048, smooth)
    for kind in ("smooth", "noise"):
        ds = CityscapesSegmentation(full, "val")
        idx = [i for i, (img, _) in enumerate(ds.samples) if img.parent.name == kind]
        size = np.mean([ds.samples[i][0].stat().st_size for i in idx]) / 1e6
        pairs = itertools.cycle(idx)
        timing = time_callable(lambda: ds.load(next(pairs)), "cpu", warmup=1, min_samples=len(idx),  # noqa: B023
                               max_samples=len(idx), budget_s=0.0, min_sample_s=0.0)
        per = timing.median
        print(f"1024x2048 {kind} images ({size:.1f} MB PNG): load+check {per * 1000:.0f} ms/pair (median of "
              f"{len(idx)}, one thread) -> EXTRAPOLATED 3475 pairs: {per * 3475:.0f} s on 1 thread, "
              f"{per * 3475 / workers:.0f} s on {workers} threads (if decoding scales)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
