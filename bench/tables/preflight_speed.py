"""Pre-flight speed on a Cityscapes-sized tree (2975 train + 500 val pairs; small images for the file
count), then the per-pair decode+check cost at 1024x2048 on a few full-size pairs, extrapolated.

    PYTHONPATH=. python benchmarks/preflight_speed.py /tmp/preflight-speed   # the folder is replaced

Generated files only (no Cityscapes needed); the full-size figure is an extrapolation, and says so.
"""
import os, sys, time, shutil
from pathlib import Path
import numpy as np
from PIL import Image
sys.path.insert(0, ".")
from bench.preflight import check_samples
from wcc.data.cityscapes import CityscapesSegmentation

base = Path(sys.argv[1]); shutil.rmtree(base, ignore_errors=True)
rng = np.random.default_rng(0)

def write_pair(root, split, city, i, h, w, smooth):
    d_img = root / "leftImg8bit" / split / city; d_gt = root / "gtFine" / split / city
    d_img.mkdir(parents=True, exist_ok=True); d_gt.mkdir(parents=True, exist_ok=True)
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

tree = base / "cs"
t = time.perf_counter()
for split, n in (("train", 2975), ("val", 500)):
    for i in range(n):
        write_pair(tree, split, f"city{i % 18:02d}", i, 32, 64, smooth=False)
print(f"tree: 3475 pairs of 32x64 written in {time.perf_counter() - t:.1f} s")
named = [("cityscapes/train", CityscapesSegmentation(tree, "train")), ("cityscapes/eval", CityscapesSegmentation(tree, "val"))]
cache = base / "preflight-cache.json"
workers = len(os.sched_getaffinity(0))
for label in ("first pass (uncached)", "second pass (cached)"):
    t = time.perf_counter(); problems = check_samples(named, cache=cache); dt = time.perf_counter() - t
    print(f"{label}: {dt:.2f} s, {len(problems)} problems, {workers} worker threads")

full = base / "full"
for smooth in (True, False):
    for i in range(4):
        write_pair(full, "val", "smooth" if smooth else "noise", i, 1024, 2048, smooth)
for kind in ("smooth", "noise"):
    ds = CityscapesSegmentation(full, "val")
    idx = [i for i, (img, _) in enumerate(ds.samples) if img.parent.name == kind]
    size = np.mean([ds.samples[i][0].stat().st_size for i in idx]) / 1e6
    ds.load(idx[0])  # warm
    times = []
    for i in idx:
        t = time.perf_counter(); ds.load(i); times.append(time.perf_counter() - t)
    per = float(np.median(times))
    print(f"1024x2048 {kind} images ({size:.1f} MB PNG): load+check {per * 1000:.0f} ms/pair (median of {len(idx)}, one thread)"
          f" -> EXTRAPOLATED 3475 pairs: {per * 3475:.0f} s on 1 thread, {per * 3475 / workers:.0f} s on {workers} threads (if decoding scales)")
