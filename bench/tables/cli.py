"""``python -m bench tables``: rebuild the paper's Cityscapes and KITTI tables."""

from __future__ import annotations

import argparse
import os
import sys
import time


def configure(p: argparse.ArgumentParser) -> None:
    from bench.tables.profiles import DEFAULT_PROFILE, PROFILES

    p.description = (
        "Train/fine-tune every row of the published Cityscapes and KITTI tables with the staged recipe "
        "(FP32 -> 8/8 -> lower bits; 8/8 -> WCC 50% -> 25% -> 12.5%), evaluate, and print the tables with "
        "the paper's numbers side by side. Resumable: rerun the same command (same --out) after an "
        "interruption; finished rows are reused, a row in progress continues from its last checkpoint."
    )
    p.add_argument("--profile", default=DEFAULT_PROFILE, choices=sorted(PROFILES),
                   help="synthetic-512 (default): SynthStreets 512x1024 on CPU, FP32 rows from the SynthStreets "
                        "checkpoint of bench pretrain (shipped in results/pretrain, else built once under "
                        "OUT/pretrain), short fine-tunes, ~20 min; synthetic-256: the same at 256x512; synthetic: "
                        "SynthStreets 96x192, every row trained from scratch; smoke: minutes, numbers meaningless; "
                        "paper: real data from --data-root with the published recipes (GPU)")
    p.add_argument("--out", default="out/tables", help="run folder: data, checkpoints, CSVs (default: %(default)s)")
    p.add_argument("--results", default="results", help="results store root (default: %(default)s)")
    p.add_argument("--data-root", default=None,
                   help="real data (profile paper): a folder holding cityscapes/ and kitti/")
    p.add_argument("--tables", default="cityscapes,kitti", help="comma-separated subset (default: %(default)s)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--executor", default="local", choices=["local", "slurm", "submitit-local"],
                   help="local: rows in this process (default); slurm: one submitit job per row chained by "
                        "dependencies; submitit-local: submitit's local executor (subprocesses)")
    p.add_argument("--partition", default=None, help="SLURM partition (with --executor slurm)")
    p.add_argument("--gpus-per-job", type=int, default=1, help="GPUs per SLURM job (default: %(default)s)")
    p.add_argument("--timeout-min", type=int, default=24 * 60, help="SLURM time limit per row, minutes")
    p.add_argument("--dry-run", action="store_true",
                   help="print the plan (rows, stages, parents), run the same argument and data checks as a real "
                        "run (every sample decoded), and exit")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--init-checkpoint", action="append", default=[], metavar="TABLE=PATH",
                   help="start TABLE (cityscapes or kitti) from this full-precision checkpoint, as the paper did "
                        "(VainF's best_deeplabv3plus_mobilenet_cityscapes_os16.pth, a bare state dict, or a "
                        "wcc-bench FP32 checkpoint): its FP32 row evaluates the file instead of training, and every "
                        "later row fine-tunes from it. Repeat for both tables")
    p.add_argument("--pretrained-backbone", default=None, metavar="PATH",
                   help="ImageNet MobileNetV2 weights (torchvision layout, e.g. mobilenet_v2-b0353104.pth) for the "
                        "backbone / encoder of every FP32 row that trains")


def init_checkpoint_args(values: list[str], tables: list[str]) -> tuple[dict[str, str], list[str]]:
    """Parse ``--init-checkpoint TABLE=PATH`` values: ({table: path}, errors)."""
    out: dict[str, str] = {}
    errors = []
    for value in values:
        table, sep, path = value.partition("=")
        if not sep or not path:
            errors.append(f"--init-checkpoint {value}: expected TABLE=PATH, e.g. cityscapes=best.pth")
        elif table not in tables:
            errors.append(f"--init-checkpoint {value}: table {table!r} is not one of the run's tables {tables}")
        elif table in out:
            errors.append(f"--init-checkpoint: {table} given twice; give one checkpoint per table")
        elif not os.path.isfile(path):
            errors.append(f"--init-checkpoint {value}: {path} does not exist (no such file)")
        else:
            out[table] = path
    return out, errors


def _weights_errors(init: dict[str, str], backbone: str | None, tables: list[str]) -> list[str]:
    """Load each given file into the model it is for (cheap, CPU): a file that does not fit fails
    here, before any data is generated or read."""
    from bench.tables.sweeps import SWEEPS
    from wcc.models import load_pretrained_backbone
    from wcc.train.checkpoint import build_model, load_weights

    errors = []
    if backbone is not None and not os.path.isfile(backbone):
        return [f"--pretrained-backbone {backbone}: does not exist (no such file)"]
    for table in tables:
        model = build_model(SWEEPS[table].arch)
        if table in init:
            if backbone is not None:
                errors.append(f"--pretrained-backbone with --init-checkpoint {table}=...: the {table} FP32 row is "
                              f"the checkpoint (not trained), so the backbone weights would be unused; give one")
                continue
            try:
                load_weights(model, init[table])
            except (ValueError, FileNotFoundError) as exc:
                errors.append(f"--init-checkpoint {table}={init[table]}: {exc}")
        elif backbone is not None:
            try:
                load_pretrained_backbone(model, backbone)
            except (ValueError, FileNotFoundError) as exc:
                errors.append(f"--pretrained-backbone {backbone}: {exc}")
    return errors


def device_for(name: str) -> str:
    """``--device`` resolved: ``auto`` is cuda when available, else cpu."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"--device {name}: CUDA is not available on this machine (torch {torch.__version__})")
    return name


def path_and_device_errors(args: argparse.Namespace) -> list[str]:
    """--out, --results, --data-root and --device, checked before any data is generated or read."""
    import torch

    from bench._args import writable_dir

    errors = [writable_dir("--out", args.out), writable_dir("--results", args.results)]
    if args.data_root is not None and not os.path.isdir(args.data_root):
        errors.append(f"--data-root {args.data_root}: does not exist (no such folder); give the folder holding the "
                      f"datasets (or leave it out to generate SynthStreets)")
    if args.device != "auto":
        try:
            dev = torch.device(args.device)
        except RuntimeError:
            dev = None
        if dev is None or dev.type not in ("cpu", "cuda"):
            errors.append(f"--device {args.device}: not a device; use auto, cpu, cuda or cuda:N")
        elif dev.type == "cuda" and not torch.cuda.is_available():
            errors.append(f"--device {args.device}: CUDA is not available on this machine (torch {torch.__version__}); "
                          f"use --device cpu")
        elif dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
            errors.append(f"--device {args.device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return [e for e in errors if e]


def _plan(tables: list[str], profile_name: str, init: dict[str, str] | None = None, out: str | None = None) -> str:
    from tabulate import tabulate

    from bench.tables.pretrain import describe_pretrain, find_pretrain
    from bench.tables.profiles import get_profile
    from bench.tables.sweeps import SWEEPS

    prof = get_profile(profile_name)
    init = init or {}
    rows = []
    notes = []
    for t in tables:
        rec = prof.recipes[t]
        pre = (prof.pretrain_steps or {}).get(t)
        if pre and t not in init and out is not None:  # which pretrain file a run would take, or that it builds one
            found, meta, passed = find_pretrain(profile_name, t, out)
            notes += [f"{t}: {line}" for line in passed]
            notes.append(f"{t}: FP32 would start from {describe_pretrain(found, meta)}" if found is not None else
                         f"{t}: no usable pretrain checkpoint; the run first builds one ({pre} steps)")
        for r in SWEEPS[t].ordered():
            first = r.stage.parent is None
            cfg = r.stage.config.to_dict() if r.stage.config else {"kind": "FP32"}
            cfg_s = ", ".join(f"{k}={v}" for k, v in cfg.items() if k not in ("backend",))
            start = r.stage.parent or (f"{init[t]} (evaluated)" if t in init else
                                       f"bench pretrain, {pre} steps (evaluated)" if pre else "(scratch)")
            steps = (0 if t in init or pre else rec.steps) if first else rec.finetune_steps
            rows.append([t, r.id, r.precision, r.shrinkage, start, cfg_s, steps])
    head = f"profile {prof.name}: {prof.description}"
    table = tabulate(rows, headers=["table", "row", "precision", "shrinkage", "from", "config", "steps"],
                     tablefmt="github")
    return "\n\n".join([head, table] + (["\n".join(notes)] if notes else []))


def run(args: argparse.Namespace) -> int:
    from bench.tables.sweeps import SWEEPS

    tables = [t.strip() for t in args.tables.split(",") if t.strip()]
    bad = [t for t in tables if t not in SWEEPS]
    if bad or not tables:
        print(f"error: --tables: unknown table(s) {bad}; choose from {sorted(SWEEPS)}", file=sys.stderr)
        return 2
    # Every argument is checked here, before data is generated or decoded and before any training.
    arg_errors = []
    if args.executor == "slurm" and not args.partition:
        arg_errors.append("--executor slurm needs --partition NAME")
    if args.gpus_per_job < 0:
        arg_errors.append(f"--gpus-per-job must be >= 0, got {args.gpus_per_job}")
    if args.timeout_min < 1:
        arg_errors.append(f"--timeout-min must be >= 1, got {args.timeout_min}")
    arg_errors += path_and_device_errors(args)
    init, init_errors = init_checkpoint_args(args.init_checkpoint, tables)
    arg_errors += init_errors
    from bench.tables.profiles import get_profile

    if args.pretrained_backbone and get_profile(args.profile).pretrain_steps and set(tables) - set(init):
        arg_errors.append(f"--pretrained-backbone: profile {args.profile} starts its FP32 rows from bench pretrain "
                          f"checkpoints, not from training in the run; use a profile that trains FP32 (synthetic, "
                          f"paper) or give --init-checkpoint for every table")
    if not arg_errors:
        arg_errors += _weights_errors(init, args.pretrained_backbone, tables)
    if arg_errors:
        for msg in arg_errors:
            print(f"error: {msg}", file=sys.stderr)
        return 2
    device = device_for(args.device)
    if args.dry_run:
        from bench.tables.run import DataError, check_run_data

        print(_plan(tables, args.profile, init, args.out))
        try:  # the same argument and data checks as a real run, without training or generating anything
            print(check_run_data(args.profile, args.out, args.data_root, tables))
        except DataError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        return 0

    from bench.store import StoreConflictError
    from bench.tables.executors import JobLostError, LocalExecutor, SubmititExecutor
    from bench.tables.run import CorruptRecordError, DataError, format_table, jobs_for, prepare_run, write_csvs

    t0 = time.perf_counter()
    if get_profile(args.profile).pretrain_steps:
        # The paper's procedure: the FP32 rows start from a trained checkpoint (built once, cached).
        from bench.tables.pretrain import ensure_pretrain

        for t in tables:
            if t not in init:
                init[t] = str(ensure_pretrain(args.profile, t, args.out, device, progress=not args.no_progress))
    try:
        spec = prepare_run(args.profile, args.out, args.results, args.data_root, device,
                           progress=not args.no_progress, tables=tables, init_checkpoints=init,
                           pretrained_backbone=args.pretrained_backbone)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    jobs = [j for j in jobs_for(spec, tables)]
    executor: LocalExecutor | SubmititExecutor
    if args.executor == "local":
        executor = LocalExecutor()
    else:
        from pathlib import Path

        executor = SubmititExecutor(Path(args.out) / "submitit",
                                    cluster="slurm" if args.executor == "slurm" else "local",
                                    partition=args.partition, gpus_per_job=args.gpus_per_job,
                                    timeout_min=args.timeout_min)
    try:
        records = executor.run(jobs)
    except (CorruptRecordError, StoreConflictError, JobLostError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    paths = write_csvs(args.out, records)
    for t in tables:
        print(format_table(t, [r for r in records if r["table"] == t]))
    print(f"wrote {', '.join(str(p) for p in paths.values())}; {len(records)} records in {args.results}/tables "
          f"(run {spec.run_id}); {time.perf_counter() - t0:.0f} s")
    return 0
