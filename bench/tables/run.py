"""Rebuilding the published tables: data, one row's job, BOPs, records, CSVs, printed tables.

A run lives in ``--out DIR``::

    DIR/run.json                      the run's identity (profile, data, run id); reused on resume
    DIR/data/synthstreets/            generated SynthStreets (synthetic profiles)
    DIR/work/<table>/<row>/           stage checkpoints (last.pt while training, final.pt when done)
    DIR/cityscapes.csv, DIR/kitti.csv the tables, published and measured side by side

and one record per row goes to the results store (``--results``, kind ``tables``).
"""

from __future__ import annotations

import csv
import io
import json
import math
import secrets
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.rows import TableRecord
from bench.store import ResultStore, SchemaError, atomic_write_text
from bench.tables.paper import TABLE_METRICS, paper_row
from bench.tables.profiles import Profile, get_profile
from bench.tables.sweeps import SWEEPS, SweepRow, TableSweep

if TYPE_CHECKING:
    from wcc.train.staged import FirstStageInit

__all__ = ["RowJob", "RunSpec", "prepare_run", "run_row", "row_bops", "write_csvs", "format_table",
           "CSV_COLUMNS", "CorruptRecordError", "DataError", "check_run_data", "preflight", "jobs_for", "data_source",
           "file_ref", "evaluator", "record_metrics", "table_data", "TableData"]

CSV_COLUMNS = {
    "cityscapes": ["precision", "shrinkage", "bops_paper", "bops", "miou_paper", "miou", "data"],
    "kitti": ["precision", "shrinkage", "bops_paper", "bops", "abs_rel_paper", "abs_rel", "rmse_paper", "rmse", "data"],
}


class DataError(ValueError):
    """The data for a run is missing or malformed; raised before any training starts."""


class CorruptRecordError(ValueError):
    """A finished row's record cannot be read back on resume; the message says how to set it aside."""


@dataclass(frozen=True)
class RunSpec:
    """Everything a row job needs, picklable (it travels to SLURM workers)."""

    profile: str
    out: str
    results: str
    data_root: str | None
    device: str
    run_id: str
    progress: bool = True
    # table -> a full-precision checkpoint its FP32 row evaluates instead of training (the
    # paper's procedure: its FP32 Cityscapes row is VainF's checkpoint); pairs, for pickling.
    init_checkpoints: tuple[tuple[str, str], ...] = ()
    pretrained_backbone: str | None = None  # ImageNet MobileNetV2 weights for FP32 training

    def first_stage_init(self, table: str) -> "FirstStageInit":
        from wcc.train.staged import FirstStageInit

        return FirstStageInit(checkpoint=dict(self.init_checkpoints).get(table),
                              pretrained_backbone=self.pretrained_backbone)


@dataclass(frozen=True)
class RowJob:
    spec: RunSpec
    table: str
    row_id: str

    @property
    def parent(self) -> str | None:
        return SWEEPS[self.table].row(self.row_id).stage.parent

    @property
    def label(self) -> str:
        r = SWEEPS[self.table].row(self.row_id)
        return f"{self.table} {r.precision} {r.shrinkage}"

    @property
    def record_name(self) -> str:
        return f"{self.spec.run_id}-{self.table}-{self.row_id}"


# ----------------------------------------------------------------------------------- data


def _synth_root(spec_out: str) -> Path:
    return Path(spec_out) / "data" / "synthstreets"


def _data_roots(profile: Profile, spec: RunSpec) -> dict[str, Path]:
    if profile.data == "synthetic":
        root = _synth_root(spec.out)
        return {"cityscapes": root / "cityscapes", "kitti": root / "kitti"}
    assert spec.data_root is not None
    return {"cityscapes": Path(spec.data_root) / "cityscapes", "kitti": Path(spec.data_root) / "kitti"}


def data_source(profile: Profile, table: str, spec: RunSpec) -> str:
    """The data source named on every table and record."""
    if profile.data == "synthetic":
        h, w = profile.synth_size
        real = "Cityscapes" if table == "cityscapes" else "KITTI"
        return f"SynthStreets {h}x{w} (synthetic stand-in, not {real})"
    if table == "cityscapes":
        return f"Cityscapes val ({spec.data_root}/cityscapes)"
    return f"KITTI {profile.kitti_eval_split} ({spec.data_root}/kitti)"


def _datasets(profile: Profile, table: str, spec: RunSpec, eval_size: tuple[int, int] | None = None):
    """(raw train set, eval set, train transform, evaluate(model) -> metrics).

    ``eval_size`` (H, W) overrides the profile's evaluation size (``bench evaluate --eval-size``).
    """
    from functools import partial

    from wcc.data import CityscapesSegmentation, KittiDepth
    from wcc.data.transforms import Compose, train_transform
    from wcc.train import evaluate_depth, evaluate_segmentation

    recipe = profile.recipes[table]
    root = _data_roots(profile, spec)[table]
    train: Any
    val: Any
    eval_size = eval_size or (profile.eval_size or {}).get(table)
    raw = Compose([])  # training samples stay in [0, 1]; the train transform augments + normalises
    progress = spec.progress
    if table == "cityscapes":
        train = CityscapesSegmentation(root, "train", transform=raw)
        val = CityscapesSegmentation(root, "val", size=eval_size, max_items=profile.max_eval_items)
        tf = train_transform(recipe.crop, scale_range=recipe.scale_range, target_fill=255, flip=recipe.hflip,
                             jitter=0.5 if recipe.color_jitter else 0.0)
        evaluate = partial(evaluate_segmentation, dataset=val, device=spec.device, progress=progress)
    else:
        train = KittiDepth(root, profile.kitti_train_split, transform=raw)
        val = KittiDepth(root, profile.kitti_eval_split, size=eval_size, max_items=profile.max_eval_items)
        scale = None if recipe.scale_range == (1.0, 1.0) else recipe.scale_range
        tf = train_transform(recipe.crop, scale_range=scale, target_fill=0, flip=recipe.hflip,
                             jitter=0.3 if recipe.color_jitter else 0.0)
        evaluate = partial(evaluate_depth, dataset=val, crop=profile.depth_crop, device=spec.device,
                           progress=progress)
    return train, val, tf, (lambda model: evaluate(model))


def _check_data_args(profile: Profile, profile_name: str, data_root: str | Path | None) -> None:
    if profile.data == "real":
        if data_root is None:
            raise DataError(f"profile {profile_name!r} trains on real data: pass --data-root PATH holding "
                            f"cityscapes/ (leftImg8bit/, gtFine/) and kitti/ (raw drives, splits/)")
        if not Path(data_root).is_dir():
            raise DataError(f"--data-root {data_root} does not exist or is not a directory")
    elif data_root is not None:
        raise DataError(f"profile {profile_name!r} uses generated SynthStreets; --data-root is only for "
                        f"the 'paper' profile")


def preflight(profile: Profile, spec: RunSpec, tables: list[str]) -> None:
    """Open every dataset of ``tables`` and decode every sample of every split they use.

    Raises :class:`DataError` listing the files and their problems (nothing is trained).
    """
    from bench.tables.preflight import CACHE_NAME, check_samples

    named = []
    for table in tables:
        try:
            train, val, _, _ = _datasets(profile, table, spec)
        except (FileNotFoundError, ValueError, ImportError) as exc:
            raise DataError(f"{table} data under {_data_roots(profile, spec)[table]} is not usable: {exc}") from exc
        named += [(f"{table}/train", train), (f"{table}/eval", val)]
    problems = check_samples(named, cache=Path(spec.out) / CACHE_NAME)
    if problems:
        shown = "\n  ".join(problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise DataError(f"{len(problems)} damaged or invalid data file(s); nothing was trained. Fix or remove "
                        f"them and rerun:\n  {shown}{more}")


def check_run_data(profile_name: str, out: str | Path, data_root: str | Path | None,
                   tables: list[str]) -> str:
    """What ``--dry-run`` checks: the arguments and, where the data exists, every sample.

    Returns a line saying what was checked; raises :class:`DataError` on a problem. Nothing is
    generated or written except the pre-flight cache.
    """
    profile = get_profile(profile_name)
    _check_data_args(profile, profile_name, data_root)
    spec = RunSpec(profile_name, str(out), "", str(data_root) if data_root else None, "cpu", "dry-run", False)
    if profile.data == "synthetic" and not _synth_root(spec.out).is_dir():
        return f"data: SynthStreets will be generated under {_synth_root(spec.out)} on the first run"
    preflight(profile, spec, tables)
    return f"data: every sample of {', '.join(tables)} decoded and checked"


def file_ref(path: str | Path | None) -> dict[str, str] | None:
    """``{"path", "sha256"}`` of a weights file, as records and run identities name it."""
    from wcc.train.checkpoint import file_sha256

    return None if path is None else {"path": str(path), "sha256": file_sha256(path)}


def prepare_run(profile_name: str, out: str | Path, results: str | Path, data_root: str | Path | None,
                device: str, progress: bool = True, tables: list[str] | None = None,
                init_checkpoints: dict[str, str] | None = None, pretrained_backbone: str | None = None) -> RunSpec:
    """Resolve the run (reusing ``out/run.json`` when resuming), get the data ready and check it.

    Synthetic profiles generate SynthStreets on first use. Then every image and label of every
    split the run's ``tables`` (default: all) use is decoded and checked (:func:`preflight`),
    so a bad root or a damaged file fails here, before any training.
    """
    profile = get_profile(profile_name)
    out = Path(out)
    tables = list(tables or SWEEPS)
    _check_data_args(profile, profile_name, data_root)
    run_file = out / "run.json"
    init_checkpoints = dict(init_checkpoints or {})
    # The starting weights are part of the run's identity (by content): resuming a run with
    # other weights would mix rows of two different starts.
    identity = {"profile": profile_name, "data_root": str(data_root) if data_root else None,
                "init_checkpoints": {t: file_ref(p) for t, p in sorted(init_checkpoints.items())},
                "pretrained_backbone": file_ref(pretrained_backbone)}
    if run_file.is_file():
        prev = json.loads(run_file.read_text())
        # Runs written before the starting weights were part of the identity started from scratch.
        before = {k: prev.get(k, {} if k == "init_checkpoints" else None) for k in identity}
        if before != identity:
            raise DataError(f"{out} holds a run of {before}, not {identity}; "
                            f"use another --out to start a new run")
        run_id = prev["run_id"]
    else:
        from bench.environment import git_state

        commit, dirty = git_state()
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        # The random tail keeps ids unique for runs started in the same second (on this host or
        # another one writing to the same --results); the stamp alone let two runs overwrite
        # each other's records.
        run_id = (f"{profile_name}-{stamp}-{(commit or 'nogit')[:8]}{'-dirty' if dirty else ''}"
                  f"-{secrets.token_hex(4)}")
    spec = RunSpec(profile_name, str(out), str(results), str(data_root) if data_root else None, device, run_id,
                   progress, tuple(sorted(init_checkpoints.items())), pretrained_backbone)
    if profile.data == "synthetic":
        from wcc.data.synthetic import ensure_synthstreets

        ensure_synthstreets(_synth_root(spec.out), num=profile.synth_num, size=profile.synth_size,
                            val_fraction=profile.synth_val_fraction, progress=progress)
    preflight(profile, spec, tables)
    atomic_write_text(run_file, json.dumps({**identity, "run_id": run_id, "out": str(out)}, indent=2) + "\n")
    return spec


# ----------------------------------------------------------------------------------- rows


def _chain(sweep: TableSweep, row: SweepRow) -> list[SweepRow]:
    chain = [row]
    while chain[-1].stage.parent is not None:
        chain.append(sweep.row(chain[-1].stage.parent))
    return chain[::-1]


def row_facts(table: str, row: SweepRow) -> dict[str, Any]:
    """The TableRecord fields that belong to the row itself, however its metrics were obtained
    (trained in a run, or evaluated by ``bench evaluate``): the table, the row's config, its BOPs
    in the table's convention and the actual one, and the published numbers beside them."""
    sweep = SWEEPS[table]
    b = row_bops(table, row.id)
    published = paper_row(table, row.precision, row.shrinkage)
    return {"table": sweep.table, "config": row.stage.config.to_dict() if row.stage.config else None,
            "metrics_paper": dict(published.metrics), "bops": b[sweep.bops_convention],
            "bops_convention": sweep.bops_convention, "bops_actual": b["actual"], "bops_paper": published.bops,
            "bops_input": list(sweep.bops_input)}


def row_bops(table: str, row_id: str) -> dict[str, float]:
    """BOPs of a row at the paper's resolution: the table's convention and the 'actual' one."""
    from wcc import convert
    from wcc.accounting import bops, layer_costs
    from wcc.models import paper_keep_fp
    from wcc.train.checkpoint import build_model

    sweep = SWEEPS[table]
    model = build_model(sweep.arch)
    for r in _chain(sweep, sweep.row(row_id)):
        if r.stage.config is not None:
            convert(model, r.stage.config, keep_fp=paper_keep_fp(model))
    costs = layer_costs(model, sweep.bops_input)
    precision = (None, None) if sweep.row(row_id).stage.config is None else None
    return {"paper": bops(costs, "paper", precision=precision), "actual": bops(costs, "actual")}


def _clean(metrics: dict[str, Any]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for k, v in metrics.items():
        if isinstance(v, (int, float)):
            out[k] = float(v) if math.isfinite(float(v)) else None
    return out


def record_metrics(metrics: dict[str, Any]) -> dict[str, float | None]:
    """An evaluation's metrics as a record stores them: finite numbers or null, per-class IoU
    flattened to ``iou_<class>`` (kept for the report)."""
    out = _clean(metrics)
    if "iou" in metrics:
        out.update({f"iou_{k}": v for k, v in _clean(dict(metrics["iou"])).items()})
    return out


def evaluator(profile_name: str, table: str, out: str | Path, data_root: str | Path | None, device: str,
              eval_size: tuple[int, int] | None = None, progress: bool = True) -> tuple[Any, str]:
    """``(evaluate(model) -> metrics, data source label)`` for one table's evaluation split."""
    data = table_data(profile_name, table, out, data_root, device, eval_size, progress)
    return data.evaluate, data.source


@dataclass(frozen=True)
class TableData:
    """One table's data for a profile: raw train set, its train transform, ``evaluate(model)``."""

    train: Any
    train_transform: Any
    evaluate: Any
    source: str


def table_data(profile_name: str, table: str, out: str | Path, data_root: str | Path | None, device: str,
               eval_size: tuple[int, int] | None = None, progress: bool = True) -> TableData:
    """A table's data as ``bench tables`` uses it, for ``bench evaluate`` and ``bench pretrain``.

    SynthStreets under ``out/data`` (generated when missing, so ``--out`` of a tables run reuses
    its data) or real data under ``data_root``. Every sample is decoded and checked first
    (:class:`DataError`).
    """
    profile = get_profile(profile_name)
    _check_data_args(profile, profile_name, data_root)
    spec = RunSpec(profile_name, str(out), "", str(data_root) if data_root else None, device, "evaluate", progress)
    if profile.data == "synthetic":
        from wcc.data.synthetic import ensure_synthstreets

        ensure_synthstreets(_synth_root(spec.out), num=profile.synth_num, size=profile.synth_size,
                            val_fraction=profile.synth_val_fraction, progress=progress)
    preflight(profile, spec, [table])
    train, _, tf, evaluate = _datasets(profile, table, spec, eval_size)
    source = data_source(profile, table, spec)
    if eval_size is not None:
        source += f", evaluated at {eval_size[0]}x{eval_size[1]}"
    return TableData(train, tf, evaluate, source)


def run_row(job: RowJob) -> dict[str, Any]:
    """Train/fine-tune + evaluate one row (or reuse it when finished); write and return its record."""
    from wcc.models import paper_keep_fp
    from wcc.train import run_stage

    spec = job.spec
    store = ResultStore(spec.results)
    if store.exists("tables", job.record_name):
        path = store.path("tables", job.record_name)
        try:
            rec = store.read("tables", job.record_name)
        except SchemaError as exc:
            raise CorruptRecordError(
                f"cannot resume {job.label}: its record is corrupt: {exc}. Set it aside with "
                f"`mv {path} {path}.corrupt` (a name not ending in .json) and rerun the same command: "
                f"the row is then recomputed from its checkpoints"
            ) from None
        print(f"{job.label}: finished earlier, reusing record {job.record_name}", file=sys.stderr, flush=True)
        return rec
    profile = get_profile(spec.profile)
    sweep = SWEEPS[job.table]
    row = sweep.row(job.row_id)
    train, _, tf, evaluate = _datasets(profile, job.table, spec)
    result = run_stage(row.stage, arch=sweep.arch, recipe=profile.recipes[job.table], train_set=train,
                       train_transform=tf, evaluate=evaluate, workdir=Path(spec.out) / "work" / job.table,
                       keep_fp=paper_keep_fp, device=spec.device, progress=spec.progress,
                       init=spec.first_stage_init(job.table))
    metrics = record_metrics(result.metrics)
    record = store.new_record("tables", **TableRecord(
        **row_facts(job.table, row),
        row={"id": row.id, "precision": row.precision, "shrinkage": row.shrinkage, "parent": row.stage.parent},
        data=data_source(profile, job.table, spec),
        synthetic=profile.data == "synthetic",
        profile=spec.profile,
        run_id=spec.run_id,
        recipe=profile.recipes[job.table].to_dict(),
        metrics=metrics,
        wall_time_s=result.train_time_s + result.eval_time_s,
        train_time_s=result.train_time_s,
        eval_time_s=result.eval_time_s,
        device=spec.device,
        init_checkpoint=file_ref(spec.first_stage_init(job.table).checkpoint),
        pretrained_backbone=file_ref(spec.pretrained_backbone),
        procedure="staged",
    ).to_dict())
    store.write("tables", job.record_name, record)
    return record


# ----------------------------------------------------------------------------------- output


def _fmt(v: Any, digits: int) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return ""
    return f"{v:.{digits}f}"


def _csv_rows(table: str, records: list[dict[str, Any]]) -> list[dict[str, str]]:
    order = {r.id: i for i, r in enumerate(SWEEPS[table].rows)}
    rows = []
    for rec in sorted(records, key=lambda r: order[r["row"]["id"]]):
        row = {"precision": rec["row"]["precision"], "shrinkage": rec["row"]["shrinkage"],
               "bops_paper": _fmt(rec["bops_paper"], 1), "bops": _fmt(rec["bops"], 1), "data": rec["data"]}
        for m in TABLE_METRICS[table]:
            row[f"{m}_paper"] = _fmt(rec["metrics_paper"].get(m), 3)
            row[m] = _fmt(rec["metrics"].get(m), 3)
        rows.append(row)
    return rows


def write_csvs(out: str | Path, records: list[dict[str, Any]]) -> dict[str, Path]:
    """``cityscapes.csv`` and ``kitti.csv`` (exact columns of :data:`CSV_COLUMNS`), atomically."""
    paths = {}
    for table, cols in CSV_COLUMNS.items():
        recs = [r for r in records if r["table"] == table]
        if not recs:
            continue
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
        writer.writeheader()
        writer.writerows(_csv_rows(table, recs))
        path = Path(out) / f"{table}.csv"
        atomic_write_text(path, buf.getvalue())
        paths[table] = path
    return paths


def format_table(table: str, records: list[dict[str, Any]]) -> str:
    """A Markdown table (tabulate) with a caption naming the data source."""
    from tabulate import tabulate

    rows = _csv_rows(table, records)
    if not rows:
        return ""
    cols = [c for c in CSV_COLUMNS[table] if c != "data"]
    sources = sorted({r["data"] for r in rows})
    conv = records[0].get("bops_convention", "paper")
    caption = (f"{'Cityscapes' if table == 'cityscapes' else 'KITTI'} table - measured on: {'; '.join(sources)}\n"
               f"(*_paper: published numbers; bops: billions at {records[0]['bops_input'][2]}x"
               f"{records[0]['bops_input'][3]}, {conv} convention)")
    body = tabulate([[r[c] for c in cols] for r in rows], headers=cols, tablefmt="github", disable_numparse=True)
    return f"{caption}\n\n{body}\n"


def jobs_for(spec: RunSpec, tables: list[str]) -> list[RowJob]:
    return [RowJob(spec, t, r.id) for t in tables for r in SWEEPS[t].ordered()]

