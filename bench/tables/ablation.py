"""``python -m bench ablation-resolution``: how much of WCC's behaviour depends on feature-map size.

The paper evaluates at 1024x2048 (DeepLabV3+'s stride-16 maps are 64x128); the stand-in's 96x192
gives 6x12 maps, where a 3-level Haar transform has little spatial redundancy to drop
(docs/design.md §4.2). This command takes one finished ``bench tables`` run and evaluates the
same checkpoints - its 8/8 row and its WCC 50/25/12.5% rows, unchanged - at several image sizes,
and writes one ``ablation`` record: per size and row the metrics and the drop against 8/8 at
that size. The report plots the drops against the size.

The evaluation images are fresh SynthStreets scenes (seed 1, none of them seen in training,
whose scenes have seed 0) rendered at the largest size and resized down to each size, so every
size shows the same scenes.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["ABLATION_ROWS", "DEFAULT_SIZES", "resolution_ablation", "feature_map_size"]

#: The rows compared: 8/8 (the reference at each size) and the WCC chain.
ABLATION_ROWS: tuple[str, ...] = ("q8_8", "wcc50", "wcc25", "wcc12")
DEFAULT_SIZES: tuple[tuple[int, int], ...] = ((96, 192), (128, 256), (256, 512), (384, 768), (512, 1024))
_STRIDE = {"cityscapes": 16, "kitti": 32}
_SEED = 1  # not the tables' seed 0: the ablation never evaluates a training scene


def configure(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Evaluate one finished bench tables run's 8/8 and WCC 50/25/12.5% checkpoints, unchanged, at several "
        "image sizes on fresh SynthStreets scenes, and write an ablation record (the drop of each WCC row "
        "against 8/8 at each size). The report plots it.")
    p.add_argument("--run", default="out/tables", metavar="OUT",
                   help="the --out folder of a finished bench tables run (default: %(default)s)")
    p.add_argument("--table", default="cityscapes", choices=["cityscapes", "kitti"], help="default: %(default)s")
    p.add_argument("--sizes", default=",".join(f"{h}x{w}" for h, w in DEFAULT_SIZES),
                   help="comma-separated HxW evaluation sizes (default: %(default)s)")
    p.add_argument("--scenes", type=int, default=30, help="evaluation scenes (default: %(default)s)")
    p.add_argument("--results", default="results", help="results store root (default: %(default)s)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def feature_map_size(table: str, size: tuple[int, int]) -> list[int]:
    """``[H, W]`` of the deepest feature map (stride 16 for DeepLabV3+, 32 for the depth encoder)."""
    s = _STRIDE[table]
    return [-(-size[0] // s), -(-size[1] // s)]


def _parse_sizes(text: str) -> list[tuple[int, int]]:
    from wcc.data.synthetic import parse_size

    return [parse_size(t.strip()) for t in text.split(",") if t.strip()]


def resolution_ablation(run_dir: str | Path, table: str, sizes: list[tuple[int, int]], *, scenes: int = 30,
                        device: str = "cpu", progress: bool = True) -> dict[str, Any]:
    """The fields of an ``ablation`` record (see the module docstring)."""
    from bench.rows import ResolutionRow
    from bench.tables.evaluate import load_table_checkpoint
    from bench.tables.run import file_ref, record_metrics
    from bench.tables.sweeps import SWEEPS
    from wcc.data import CityscapesSegmentation, KittiDepth
    from wcc.data.synthetic import ensure_synthstreets
    from wcc.train import evaluate_depth, evaluate_segmentation
    from wcc.train.staged import stage_paths

    t_start = time.perf_counter()
    work = Path(run_dir) / "work" / table
    paths = {r: stage_paths(work, r)[1] for r in ABLATION_ROWS}
    top = max(sizes)
    # Fresh scenes at the largest size; num/val_fraction put `scenes` of them in val.
    root = Path(run_dir) / "data" / f"ablation-seed{_SEED}-{top[0]}x{top[1]}"
    num = max(scenes + 1, int(scenes / 0.9) + 1)
    ensure_synthstreets(root, num=num, size=top, seed=_SEED, val_fraction=scenes / num, progress=progress)
    models = {r: load_table_checkpoint(table, p).model for r, p in paths.items()}
    rows: list[dict[str, Any]] = []
    for size in sizes:
        at_size: dict[str, tuple[dict[str, Any], float]] = {}
        for r, model in models.items():
            t0 = time.perf_counter()
            if table == "cityscapes":
                data = CityscapesSegmentation(root / "cityscapes", "val", size=size, max_items=scenes)
                metrics = evaluate_segmentation(model, data, device=device, progress=progress)
            else:
                kitti = KittiDepth(root / "kitti", "val", size=size, max_items=scenes)
                metrics = evaluate_depth(model, kitti, crop=None, device=device, progress=progress)
            at_size[r] = (record_metrics(metrics), time.perf_counter() - t0)
        ref = at_size["q8_8"][0]
        for r, (metrics, seconds) in at_size.items():
            row = SWEEPS[table].row(r)
            drop = {k: (None if v is None or ref.get(k) is None else v - ref[k])
                    for k, v in metrics.items() if not k.startswith("iou_")}
            rows.append(ResolutionRow(row_id=r, precision=row.precision, shrinkage=row.shrinkage,
                                      eval_size=list(size), feature_map=feature_map_size(table, size),
                                      metrics=metrics, drop_vs_q8_8=drop, eval_time_s=seconds).to_dict())
    return {"study": "resolution", "table": table,
            "data": f"SynthStreets seed {_SEED}, {scenes} val scenes rendered at {top[0]}x{top[1]} and resized "
                    f"(synthetic stand-in, not {'Cityscapes' if table == 'cityscapes' else 'KITTI'})",
            "synthetic": True, "run_dir": str(run_dir),
            "checkpoints": {r: file_ref(p) for r, p in paths.items()}, "rows": rows,
            "wall_time_s": time.perf_counter() - t_start, "device": device}


def _num(v: Any) -> float:
    return float("nan") if v is None else float(v)


def run(args: argparse.Namespace) -> int:
    import argparse as _argparse

    from bench._args import int_at_least, report_errors, writable_dir
    from bench.tables.cli import device_for
    from bench.tables.sweeps import SWEEPS
    from wcc.train.staged import stage_paths

    errors: list[str | None] = [writable_dir("--results", args.results), int_at_least("--scenes", args.scenes, 1)]
    sizes: list[tuple[int, int]] = []
    try:
        sizes = _parse_sizes(args.sizes)
        if not sizes or min(min(s) for s in sizes) < 16:
            errors.append(f"--sizes {args.sizes}: give HxW sizes of at least 16x16")
    except _argparse.ArgumentTypeError as exc:
        errors.append(f"--sizes: {exc}")
    missing = [str(stage_paths(Path(args.run) / "work" / args.table, r)[1]) for r in ABLATION_ROWS
               if not stage_paths(Path(args.run) / "work" / args.table, r)[1].is_file()]
    if missing:
        errors.append(f"--run {args.run}: no finished {args.table} rows {ABLATION_ROWS} there (missing {missing[0]}"
                      f"{' ...' if len(missing) > 1 else ''}); run bench tables --out {args.run} first")
    if report_errors("bench ablation-resolution", errors):
        return 2
    assert args.table in SWEEPS
    from bench.store import ResultStore

    fields = resolution_ablation(args.run, args.table, sizes, scenes=args.scenes, device=device_for(args.device),
                                 progress=not args.no_progress)
    store = ResultStore(args.results)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    name = f"resolution-{args.table}-{stamp}"
    store.write("ablation", name, store.new_record("ablation", **fields))
    metric = "miou" if args.table == "cityscapes" else "abs_rel"
    print(f"{'size':>10} {'map':>7} " + " ".join(f"{r:>8}" for r in ABLATION_ROWS) + f"   ({metric}; drop vs 8/8)")
    for size in sizes:
        at = {r["row_id"]: r for r in fields["rows"] if tuple(r["eval_size"]) == size}
        fm = at["q8_8"]["feature_map"]
        vals = " ".join(f"{_num(at[r]['metrics'].get(metric)):8.3f}" for r in ABLATION_ROWS)
        drops = " ".join(f"{_num(at[r]['drop_vs_q8_8'].get(metric)):+.3f}" for r in ABLATION_ROWS[1:])
        print(f"{size[0]:>4}x{size[1]:<5} {fm[0]:>3}x{fm[1]:<3} {vals}   {drops}")
    print(f"wrote {store.path('ablation', name)}; {fields['wall_time_s']:.0f} s", file=sys.stderr)
    return 0
