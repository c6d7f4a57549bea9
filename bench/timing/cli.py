"""``python -m bench timing``: layer and model timing on this machine, into the results store.

Writes ``<out>/timing/<name>.json`` (schema ``wcc-bench/timing/v1``: the environment with the
device probes and this machine's measured bandwidth and GEMM peaks, then per row the median,
IQR, sample count, raw samples, the ratio to the fastest dense baseline (eager or a deployed
runtime: ONNX Runtime FP32/int8, torch.compile, OpenVINO, TensorRT), the ratio to the best eager
dense conv, and the row's floor) and ends with the WCC / dense ratio table.

    python -m bench timing --device cpu --quick --out results
    python -m bench timing --device cuda --shape-sets extra --keep-ratios 0.25 --directions fwd
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime, timezone
from typing import Any

from wcc.data.synthetic import parse_size

__all__ = ["configure", "run", "build_record"]


def _csv(kind: type = str):
    def parse(text: str) -> tuple:
        try:
            return tuple(kind(v.strip()) for v in text.split(",") if v.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected a comma-separated list of {kind.__name__}, got {text!r}") from None
    return parse


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where to time (default cpu)")
    parser.add_argument("--quick", action="store_true",
                        help="reduced grid: the 3 extra shapes, keep 1.0/0.25, J=3, fwd (+1 fwdbwd), WCC on the "
                             "preferred backend only (--backends to add more); dense, the deployed runtimes and "
                             "WCC 25%% at a small model input; fewer samples")
    parser.add_argument("--out", default="results", help="results store root (default: results)")
    parser.add_argument("--name", help="record name (default: <device>-<quick|full>-<UTC time>)")
    g = parser.add_argument_group("layer grid (defaults: the full grid, or --quick's)")
    g.add_argument("--shape-sets", type=_csv(), metavar="A,B", help="named shape sets (see bench.timing.shapes)")
    g.add_argument("--shapes", type=_csv(), metavar="NxCIxCO@HxW,...",
                   help="extra shapes, timed as the set 'custom' (e.g. 1x64x64@32x32)")
    g.add_argument("--backends", type=_csv(), metavar="A,B", help="WCC backends (default: all available)")
    g.add_argument("--keep-ratios", type=_csv(float), metavar="R,..")
    g.add_argument("--levels", type=_csv(int), metavar="J,..")
    g.add_argument("--directions", type=_csv(), metavar="fwd,fwdbwd")
    g.add_argument("--dtypes", type=_csv(), metavar="float32,..")
    g.add_argument("--no-layer", action="store_true", help="skip the layer benchmarks")
    r = parser.add_argument_group("deployed dense baselines (bench.timing.runtimes)")
    r.add_argument("--runtimes", type=_csv(), metavar="A,B",
                   help="baselines to time on layers and the model (default: all of the device's: cpu "
                        "ort_fp32,ort_int8,inductor_fp32,openvino_fp32,openvino_int8; cuda inductor_fp32,"
                        "tensorrt_fp16,tensorrt_int8); one that cannot run records why")
    r.add_argument("--no-runtimes", action="store_true", help="time eager dense baselines only")
    r.add_argument("--no-peaks", action="store_true",
                   help="do not measure bandwidth and GEMM peaks (then rows get no floor)")
    m = parser.add_argument_group("model benchmarks")
    m.add_argument("--no-model", action="store_true", help="skip the model benchmarks")
    m.add_argument("--no-memory", action="store_true", help="skip the model memory measurements")
    m.add_argument("--model-resolution", type=parse_size, metavar="HxW")
    m.add_argument("--model-dtype", choices=("float32", "float16", "bfloat16"))
    t = parser.add_argument_group("timer")
    t.add_argument("--warmup", type=int, help="untimed calls before sampling")
    t.add_argument("--min-samples", type=int)
    t.add_argument("--max-samples", type=int)
    t.add_argument("--budget", type=float, metavar="S", help="sampling time per case (s)")
    t.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's default)")
    t.add_argument("--clock", choices=("wall", "process"),
                   help="CPU clock: wall (default; the latency a user sees) or process (CPU time, as asv: time spent "
                        "descheduled on a shared machine does not count; meant with --threads 1; bench ab uses it)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    o = parser.add_argument_group("rounds (bench.timing.rounds; the regression verdict is computed on rounds)")
    o.add_argument("--rounds", type=int, metavar="N",
                   help="fresh processes, each timing every row once in a rotated order; the record keeps each row's "
                        "per-round median and IQR (default 3, --quick 2; at least 2: one round has no band)")
    # Set by --rounds and by bench ab for the processes they start: one round, row groups rotated by K.
    o.add_argument("--one-round", action="store_true", help=argparse.SUPPRESS)
    o.add_argument("--rotate", type=int, default=0, help=argparse.SUPPRESS)


def _timer(args: argparse.Namespace) -> dict[str, Any]:
    timer = ({"warmup": 1, "min_samples": 3, "max_samples": 20, "budget_s": 0.3} if args.quick
             else {"warmup": 3, "min_samples": 10, "max_samples": 100, "budget_s": 2.0})
    for key, value in (("warmup", args.warmup), ("min_samples", args.min_samples),
                       ("max_samples", args.max_samples), ("budget_s", args.budget), ("clock", args.clock)):
        if value is not None:
            timer[key] = value
    return timer


def _grid(args: argparse.Namespace) -> Any:
    import dataclasses

    from bench.timing.layer import default_grid
    from bench.timing.shapes import SHAPE_SETS, parse_shape

    grid = default_grid(args.device, args.quick)
    changes: dict[str, Any] = {}
    sets = args.shape_sets if args.shape_sets is not None else (() if args.shapes else grid.shape_sets)
    unknown = [s for s in sets if s not in SHAPE_SETS]
    if unknown:
        raise SystemExit(f"unknown shape set(s) {unknown}; known: {', '.join(SHAPE_SETS)}")
    if args.shapes:
        changes["shapes"] = {"custom": tuple(parse_shape(s) for s in args.shapes)}
        sets = (*sets, "custom")
    changes["shape_sets"] = tuple(sets)
    changes["runtimes"] = _runtimes(args)
    for name in ("keep_ratios", "levels", "directions", "dtypes"):
        if getattr(args, name) is not None:
            changes[name] = getattr(args, name)
    if args.backends is not None:
        changes["backends"] = args.backends
    return dataclasses.replace(grid, **changes)


def _runtimes(args: argparse.Namespace) -> tuple[str, ...]:
    from bench.timing.runtimes import RUNTIME_OPS, runtime_ops

    if args.no_runtimes:
        return ()
    if args.runtimes is None:
        return runtime_ops(args.device)
    unknown = [r for r in args.runtimes if r not in RUNTIME_OPS]
    if unknown:
        raise SystemExit(f"unknown runtime(s) {unknown}; known: {', '.join(RUNTIME_OPS)}")
    return tuple(args.runtimes)


def _check_args(args: argparse.Namespace) -> list[str | None]:
    """Every argument's problem, found before any benchmark runs (so none costs a measurement)."""
    from bench._args import int_at_least, writable_dir
    from wcc.backends import list_backends

    errors = [writable_dir("--out", args.out), int_at_least("--warmup", args.warmup, 0),
              int_at_least("--min-samples", args.min_samples, 1), int_at_least("--max-samples", args.max_samples, 1),
              int_at_least("--threads", args.threads, 1), int_at_least("--rounds", args.rounds, 2)]
    if args.min_samples is not None and args.max_samples is not None and args.max_samples < args.min_samples:
        errors.append(f"--max-samples ({args.max_samples}) must be >= --min-samples ({args.min_samples})")
    if args.clock == "process" and args.device != "cpu":
        errors.append("--clock process is for --device cpu (CUDA samples are timed with events)")
    if args.budget is not None and not args.budget >= 0:  # 0: the minimum samples only
        errors.append(f"--budget must be >= 0 seconds, got {args.budget}")
    if args.keep_ratios is not None and not all(0 < r <= 1 for r in args.keep_ratios):
        errors.append(f"--keep-ratios must each be in (0, 1], got {list(args.keep_ratios)}")
    if args.levels is not None and not all(j >= 1 for j in args.levels):
        errors.append(f"--levels must each be >= 1, got {list(args.levels)}")
    bad = [d for d in args.directions or () if d not in ("fwd", "fwdbwd")]
    if bad:
        errors.append(f"--directions: unknown {bad}; choose from fwd, fwdbwd")
    bad = [d for d in args.dtypes or () if d not in ("float32", "float16", "bfloat16")]
    if bad:
        errors.append(f"--dtypes: unknown {bad}; choose from float32, float16, bfloat16")
    if args.model_resolution is not None and min(args.model_resolution) < 1:
        errors.append(f"--model-resolution must be positive, got {args.model_resolution}")
    missing = [b for b in args.backends or () if b not in list_backends()]
    if missing:
        errors.append(f"--backends: unknown {missing}; registered: {', '.join(list_backends())}")
    try:  # shape sets, --shapes and --runtimes: the grid's own parsing, cheap and without running anything
        _grid(args)
    except SystemExit as exc:
        errors.append(f"--shape-sets/--shapes/--runtimes: {exc}")
    except ValueError as exc:
        errors.append(f"--shapes: {exc}")
    return errors


def build_record(args: argparse.Namespace) -> dict[str, Any]:
    """Run the benchmarks ``args`` asks for and return the (unwritten) timing record."""
    import torch

    from bench.store import ResultStore
    from bench.timing.energy import EnergyMeter
    from bench.timing.floor import add_floors, layer_floor, measure_peaks, model_case_floor, safe_floor
    from bench.timing.layer import available_backends, run_layer_benchmarks
    from bench.timing.model import model_cases, run_model_benchmarks
    from bench.timing.probes import probe_all
    from bench.timing.rounds import rotate_groups

    start = time.perf_counter()
    if args.threads:
        torch.set_num_threads(args.threads)
    grid = _grid(args)
    available, status = available_backends(args.device)
    registered = {s["name"] for s in status}
    if grid.backends is not None:
        missing = [b for b in grid.backends if b not in registered]
        if missing:
            raise SystemExit(f"unknown backend(s) {missing}; registered: {', '.join(sorted(registered))}")
    # Explicitly named backends run even when unavailable, so their rows record why not.
    backends = list(grid.backends) if grid.backends is not None else available
    if args.quick and grid.backends is None:
        # The preferred backend only (as the quick model rows): the reference backend alone
        # took a quarter of a quick run on 2 cores, time the deployed baselines need.
        backends = backends[:1]
    timer = _timer(args)
    progress = not args.no_progress
    with EnergyMeter(args.device) as meter:
        probes = probe_all(args.device)
        peaks = {} if args.no_peaks else measure_peaks(args.device)
        layer_rows = [] if args.no_layer else run_layer_benchmarks(
            rotate_groups(grid.cases(backends), lambda c: (c.shape, c.direction, c.dtype), args.rotate),
            args.device, timer, meter, progress)
        cases = [] if args.no_model else rotate_groups(model_cases(
            args.device, args.quick, backends, resolution=args.model_resolution, dtype=args.model_dtype,
            runtimes=grid.runtimes), lambda c: id(c), args.rotate)
        model_rows = run_model_benchmarks(cases, args.device, timer, meter, memory=not args.no_memory,
                                          progress=progress)
        energy_source = meter.describe()
    add_floors(layer_rows, [safe_floor(layer_floor, r, peaks) for r in layer_rows])
    add_floors(model_rows, [safe_floor(model_case_floor, c, peaks) for c in cases])
    name = args.name or f"{args.device}-{'quick' if args.quick else 'full'}-" \
        f"{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%SZ')}"
    record = ResultStore(args.out).new_record(
        "timing", name=name, device=args.device, quick=bool(args.quick),
        grid={**grid.to_dict(), "model_cases": [c.to_dict() for c in cases]},
        timer=timer, backends=status, energy_source=energy_source,
        layer_rows=layer_rows, model_rows=model_rows, wall_time_s=0.0,
    )
    record["environment"]["probes"] = probes
    record["environment"]["peaks"] = peaks or "unavailable: --no-peaks"
    record["wall_time_s"] = time.perf_counter() - start
    return record


def _rounds_record(args: argparse.Namespace) -> dict[str, Any]:
    """Run the rounds as fresh processes of this command (``--one-round --rotate i``; the peaks
    are measured in the first only) and merge them into one record (bench.timing.rounds)."""
    from bench.timing.rounds import TIMING_QUICK_ROUNDS, TIMING_ROUNDS, child_argv, merge_rounds, new_session, run_round

    n = args.rounds or (TIMING_QUICK_ROUNDS if args.quick else TIMING_ROUNDS)
    if getattr(args, "argv", None) is None:  # set by bench.cli.main: the rounds rerun this command line
        raise SystemExit("bench timing --rounds: run it through python -m bench (whose main keeps the command line)")
    argv = child_argv(args.argv)
    start = time.perf_counter()
    records = []
    for i in range(n):
        print(f"round {i + 1}/{n} (a fresh process)", file=sys.stderr, flush=True)
        extra = ["--one-round", "--rotate", str(i)] + (["--no-peaks"] if i and "--no-peaks" not in argv else [])
        records.append(run_round([*argv, *extra]))
    record = merge_rounds(records, new_session())
    if records[0]["environment"].get("peaks") is not None:
        record["environment"] = records[0]["environment"]
    record["name"] = args.name or record["name"]
    record["wall_time_s"] = time.perf_counter() - start
    return record


def run(args: argparse.Namespace) -> int:
    import torch

    from bench._args import report_errors
    from bench.store import ResultStore, check_record_name
    from bench.timing.table import deployed_table, layer_ratio_table, model_table

    if args.name is not None:  # before any benchmark runs: a rejected name must not cost the measurements
        try:
            check_record_name(args.name)
        except ValueError as exc:
            print(f"python -m bench timing --name: {exc}", file=sys.stderr)
            return 2
    if report_errors("python -m bench timing", _check_args(args)):
        return 2
    if args.device == "cuda" and not torch.cuda.is_available():
        print(f"python -m bench timing --device cuda: no CUDA device here (torch {torch.__version__}, "
              f"CUDA build: {torch.version.cuda or 'none'}); run with --device cpu instead.", file=sys.stderr)
        return 2
    record = build_record(args) if args.one_round else _rounds_record(args)
    path = ResultStore(args.out).write("timing", record["name"], record)
    if record["model_rows"]:
        print("\nModel latency and memory (x dense: median over the dense model's)\n")
        print(model_table(record["model_rows"]))
    print(f"\nwrote {path} ({len(record['layer_rows'])} layer rows, {len(record['model_rows'])} model rows, "
          f"{record['wall_time_s']:.0f} s)")
    if record["layer_rows"]:
        print("\nWCC / dense median time ratios (best dense of NCHW conv2d, channels_last conv2d and matmul; "
              "< 1 is faster than dense)\n")
        print(layer_ratio_table(record["layer_rows"]))
        print("\nForward rows against the fastest dense baseline (eager or deployed runtime, any precision), "
              "with each row's floor\n")
        print(deployed_table(record["layer_rows"]))
    return 0
