"""``python -m bench evaluate``: evaluate one checkpoint, optionally converted with no fine-tuning.

The paper's FP32 Cityscapes row is VainF's checkpoint evaluated as it is; this command does
that for any checkpoint (docs/design.md §4.1), and, with ``--precision`` / ``--shrinkage``,
evaluates it after :func:`wcc.convert` with that row's configuration and no fine-tuning
("post-training WCC"). A full-precision checkpoint's converted layers start from the initial
clips; a converted stage's (e.g. 8/8 -> WCC 50%) start from its learned clips, handed over as
``--clip-handover`` says (default: as the profile's fine-tunes do). The result is one
``tables`` record (profile ``evaluate``), next to the staged rows of ``bench tables``.

Checkpoints: anything :func:`wcc.train.checkpoint.load_weights` reads (VainF's files, bare state
dicts, a wcc-bench FP32 stage) or a wcc-bench checkpoint of a converted stage
(``work/<table>/<row>/final.pt``), which is rebuilt with its conversions and evaluated as it is.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

__all__ = ["LoadedCheckpoint", "load_table_checkpoint", "row_for", "evaluate_checkpoint"]


def configure(p: argparse.ArgumentParser) -> None:
    from bench.tables.profiles import DEFAULT_PROFILE, PROFILES
    from wcc.data.synthetic import parse_size
    from wcc.layers import CLIP_HANDOVERS

    p.description = (
        "Evaluate one checkpoint on a table's evaluation split and write a results record (kind tables, "
        "profile evaluate). With --precision/--shrinkage the full-precision checkpoint is first converted "
        "to that row's configuration with no fine-tuning (post-training quantization / WCC).")
    p.add_argument("--table", required=True, choices=["cityscapes", "kitti"],
                   help="which table's model, data and metrics: cityscapes (DeepLabV3+, mIoU) or kitti (depth)")
    p.add_argument("--checkpoint", required=True, metavar="PATH",
                   help="VainF's file ({'model_state': ...}), a bare state dict, or a wcc-bench stage checkpoint "
                        "(out/tables/work/<table>/<row>/final.pt)")
    p.add_argument("--precision", default=None, metavar="W/A",
                   help="convert to this row's precision first, e.g. 8/8 or 8/4 (default: evaluate as it is)")
    p.add_argument("--shrinkage", default=None, metavar="PCT",
                   help="with WCC: 50%%, 25%% or 12.5%% (implies --precision 8/8)")
    p.add_argument("--clip-handover", default=None, choices=CLIP_HANDOVERS,
                   help="when a converted stage checkpoint is converted again: carry its learned activation clips "
                        "as they are (the paper's code) or scale them by the Haar gain 2^J (transform-gain; "
                        "docs/design.md §4.2) (default: what the profile's fine-tunes do)")
    p.add_argument("--data-root", default=None,
                   help="real data: a folder holding cityscapes/ and kitti/ (default: SynthStreets under --out)")
    p.add_argument("--profile", default=None, choices=sorted(PROFILES),
                   help=f"whose data and evaluation size (default: paper with --data-root, else {DEFAULT_PROFILE})")
    p.add_argument("--eval-size", type=parse_size, default=None, metavar="HxW",
                   help="resize the evaluation images to HxW (default: the profile's size)")
    p.add_argument("--out", default="out/tables",
                   help="folder whose data/ holds (or receives) SynthStreets; a bench tables --out reuses its data "
                        "(default: %(default)s)")
    p.add_argument("--results", default="results", help="results store root (default: %(default)s)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


@dataclass
class LoadedCheckpoint:
    """A model rebuilt from a checkpoint: its conversions so far and the stage name, if any."""

    model: nn.Module
    conversions: list[dict[str, Any]]
    stage: str | None


def load_table_checkpoint(table: str, path: str | Path) -> LoadedCheckpoint:
    """Build ``table``'s model from ``path`` (see the module docstring); ValueError names the file."""
    import torch

    from bench.tables.sweeps import SWEEPS
    from wcc.train.checkpoint import FORMAT, apply_conversions, build_model, load_checkpoint, load_weights

    sweep = SWEEPS[table]
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # load_weights names the file and the problem
        raw = None
    if isinstance(raw, dict) and raw.get("format") == FORMAT and raw.get("conversions"):
        ckpt = load_checkpoint(path)
        if ckpt["arch"].get("builder") != sweep.arch["builder"]:
            raise ValueError(f"{path} holds a {ckpt['arch'].get('builder')} model, not the {table} table's "
                             f"{sweep.arch['builder']}")
        model = build_model(ckpt["arch"])
        apply_conversions(model, ckpt["conversions"])
        from wcc.models.mobilenetv2 import load_into

        load_into(model, ckpt["model"], strict=True, source=str(path))
        return LoadedCheckpoint(model, list(ckpt["conversions"]), ckpt.get("stage"))
    model = build_model(sweep.arch)
    load_weights(model, path)
    return LoadedCheckpoint(model, [], None)


def row_for(table: str, precision: str | None, shrinkage: str | None, conversions: list[dict[str, Any]]):
    """The sweep row a run evaluates: the one with ``precision``/``shrinkage`` (post-training), or
    the one whose configuration the checkpoint's last conversion has (FP32 when none)."""
    from bench.tables.sweeps import SWEEPS

    sweep = SWEEPS[table]
    if precision is not None or shrinkage is not None:
        p, s = precision or "8/8", shrinkage or "---"
        for r in sweep.rows:
            if (r.precision, r.shrinkage) == (p, s) and r.stage.config is not None:
                return r
        choices = ", ".join(f"{r.precision} {r.shrinkage}" for r in sweep.rows if r.stage.config is not None)
        raise ValueError(f"{table} has no row with precision {p} and shrinkage {s}; rows: {choices}")
    if not conversions:
        return sweep.row("fp32")
    last = conversions[-1]["config"]
    for r in sweep.rows:
        if r.stage.config is not None and r.stage.config.to_dict() == last:
            return r
    raise ValueError(f"the checkpoint's configuration {last} is not one of the {table} table's rows")


def evaluate_checkpoint(table: str, checkpoint: str | Path, *, profile: str, precision: str | None = None,
                        shrinkage: str | None = None, out: str | Path = "out/tables",
                        data_root: str | Path | None = None, eval_size: tuple[int, int] | None = None,
                        device: str = "cpu", progress: bool = True,
                        clip_handover: str | None = None) -> dict[str, Any]:
    """Evaluate ``checkpoint`` on ``table`` (converted first when ``precision``/``shrinkage`` are
    given; an already converted stage is converted on top, its clips handed over as
    ``clip_handover`` says, default the profile's) and return the fields of its
    :class:`bench.rows.TableRecord`."""
    from bench.rows import TableRecord
    from bench.tables.profiles import get_profile
    from bench.tables.run import evaluator, file_ref, record_metrics, row_facts
    from wcc import convert
    from wcc.models import paper_keep_fp

    loaded = load_table_checkpoint(table, checkpoint)
    post_training = precision is not None or shrinkage is not None
    row = row_for(table, precision, shrinkage, loaded.conversions)
    handover = None
    if post_training:
        assert row.stage.config is not None
        handover = clip_handover or get_profile(profile).recipes[table].finetune_clip_handover
        convert(loaded.model, row.stage.config, keep_fp=paper_keep_fp(loaded.model), clip_handover=handover)
    evaluate, source = evaluator(profile, table, out, data_root, device, eval_size, progress)
    t0 = time.perf_counter()
    metrics = evaluate(loaded.model)
    eval_time = time.perf_counter() - t0
    return TableRecord(
        **row_facts(table, row),
        row={"id": row.id, "precision": row.precision, "shrinkage": row.shrinkage, "parent": None},
        profile="evaluate",
        data=source,
        synthetic=profile != "paper",
        run_id=None,
        recipe=None,
        metrics=record_metrics(metrics),
        wall_time_s=eval_time,
        train_time_s=0.0,
        eval_time_s=eval_time,
        device=device,
        init_checkpoint=file_ref(checkpoint),
        procedure="post-training" if post_training else "evaluated",
        clip_handover=handover if loaded.conversions else None,
        eval_size=list(eval_size) if eval_size else None,
    ).to_dict()


def _run_id() -> str:
    import secrets
    from datetime import datetime, timezone

    from bench.environment import git_state

    commit, dirty = git_state()
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"evaluate-{stamp}-{(commit or 'nogit')[:8]}{'-dirty' if dirty else ''}-{secrets.token_hex(4)}"


def run(args: argparse.Namespace) -> int:
    import os

    from bench._args import report_errors, writable_dir
    from bench.tables.cli import device_for, path_and_device_errors
    from bench.tables.profiles import DEFAULT_PROFILE
    from bench.tables.run import DataError
    from bench.tables.sweeps import SWEEPS

    profile = args.profile or ("paper" if args.data_root else DEFAULT_PROFILE)
    errors: list[str | None] = [writable_dir("--out", args.out), writable_dir("--results", args.results)]
    errors += path_and_device_errors(args)
    if not os.path.isfile(args.checkpoint):
        errors.append(f"--checkpoint {args.checkpoint}: does not exist (no such file)")
    if args.precision is not None and args.precision not in {r.precision for r in SWEEPS[args.table].rows}:
        errors.append(f"--precision {args.precision}: the {args.table} table has "
                      f"{sorted({r.precision for r in SWEEPS[args.table].rows if r.precision != 'FP32'})}")
    if args.shrinkage is not None and args.shrinkage not in {r.shrinkage for r in SWEEPS[args.table].rows} - {"---"}:
        errors.append(f"--shrinkage {args.shrinkage}: give one of 50%, 25%, 12.5%")
    if args.clip_handover is not None and args.precision is None and args.shrinkage is None:
        errors.append(f"--clip-handover {args.clip_handover}: only a conversion hands clips over; "
                      f"add --precision or --shrinkage")
    if args.eval_size is not None and min(args.eval_size) < 16:
        errors.append(f"--eval-size {args.eval_size[0]}x{args.eval_size[1]}: give at least 16x16")
    loaded_error = None
    if not any(errors):
        try:  # the file must fit the table's model: checked before any data is generated or read
            loaded = load_table_checkpoint(args.table, args.checkpoint)
            row_for(args.table, args.precision, args.shrinkage, loaded.conversions)
        except (ValueError, FileNotFoundError) as exc:
            loaded_error = f"--checkpoint {args.checkpoint}: {exc}"
    if report_errors("bench evaluate", [*errors, loaded_error]):
        return 2
    from bench.store import ResultStore

    t0 = time.perf_counter()
    try:
        fields = evaluate_checkpoint(args.table, args.checkpoint, precision=args.precision, shrinkage=args.shrinkage,
                                     profile=profile, out=args.out, data_root=args.data_root,
                                     eval_size=args.eval_size, device=device_for(args.device),
                                     progress=not args.no_progress, clip_handover=args.clip_handover)
    except DataError as exc:
        print(f"bench evaluate: {exc}", file=sys.stderr)
        return 2
    run_id = _run_id()
    fields["run_id"] = run_id
    store = ResultStore(args.results)
    name = f"{run_id}-{args.table}-{fields['row']['id']}"
    store.write("tables", name, store.new_record("tables", **fields))
    shown = ", ".join(f"{k} {v:.4f}" for k, v in fields["metrics"].items()
                      if v is not None and not k.startswith("iou_") and k in ("miou", "abs_rel", "rmse", "a1"))
    print(f"{args.table} {fields['row']['precision']} {fields['row']['shrinkage']} ({fields['procedure']}) on "
          f"{fields['data']}: {shown}")
    print(f"wrote {store.path('tables', name)}; {time.perf_counter() - t0:.0f} s")
    return 0
