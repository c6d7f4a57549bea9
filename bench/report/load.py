"""Reading the results store into pandas DataFrames: what the reports and ``compare`` work on.

Inputs are results-store records (:mod:`bench.store`): ``tables``, ``timing`` and
``pytest-benchmark``. A path may be a results root (``<root>/<kind>/*.json``), one kind's folder
(``*.json``) or a single record file; the kind of each file comes from its ``schema`` field.

Every record is placed by two facts taken from its ``environment``:

* **version** = ``"<wcc-bench package version>+<commit[:8]>"`` plus ``"-dirty"`` for a dirty
  checkout (``"unknown"`` / ``"nogit"`` where a fact was not recorded);
* **machine** = a stable id from the hostname, the CPU model and the GPU name (what torch saw,
  else the NVML probe's name), e.g. ``"vm-3fa2c1"``, with a readable label.

Validation: every record is validated against its kind's full schema on every read (types
enforced, non-finite numbers such as ``1e999`` rejected), with one compiled validator per kind.
An invalid record is a :class:`LoadError` naming its file and field; with ``skip_invalid=True``
(the report's default) it is left out instead and listed in :attr:`Results.skipped`.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from bench.rows import LayerRow, ModelRow, TableRecord, report_columns, required_report_fields

__all__ = ["Results", "LoadError", "load_results", "record_files", "version_of", "machine_of", "KINDS"]

KINDS = ("tables", "timing", "pytest-benchmark", "ablation")
_SCHEMA_RE = re.compile(r"^wcc-bench/([a-z-]+)/v1$")
# Fields the loader reads, per kind (top level; rows are checked in the row readers).
_REQUIRED = {
    "tables": ("environment", "created", *required_report_fields(TableRecord)),
    "timing": ("environment", "created", "name", "device", "layer_rows", "model_rows"),
    "pytest-benchmark": ("environment", "created", "benchmarks"),
    "ablation": ("environment", "created", "study", "table", "rows"),
}
# Timing rows: the columns and the fields every row must have come from the typed rows (bench.rows).
_LAYER_FIELDS = tuple(required_report_fields(LayerRow))
_MODEL_FIELDS = tuple(required_report_fields(ModelRow))

# Optional report columns (the deployed-runtime baselines and the floor, ...) are the row
# model's non-required fields: absent (NaN) in records written before they existed.


class LoadError(ValueError):
    """A results path is missing, or a record in it is not a usable results-store record."""


@dataclass
class Results:
    """The records under some paths, as frames (one row per table row / timed row).

    ``records`` has one row per file (path, kind, version, machine, created, environment and
    the timing record's energy source); ``versions`` one row per version, ordered by the time
    of its earliest record; ``machines`` maps machine id -> readable label.
    """

    records: pd.DataFrame
    tables: pd.DataFrame
    layer: pd.DataFrame
    model: pd.DataFrame
    pbench: pd.DataFrame
    versions: pd.DataFrame
    machines: dict[str, str]
    skipped: list[str] = field(default_factory=list)  # "<file>: <problem>" of records left out

    @property
    def version_order(self) -> list[str]:
        return list(self.versions["version"])

    def select_versions(self, versions: Iterable[str]) -> "Results":
        """The same results restricted to ``versions``."""
        keep = set(versions)

        def sub(df: pd.DataFrame) -> pd.DataFrame:
            return df[df["version"].isin(keep)].reset_index(drop=True) if len(df) else df

        recs = sub(self.records)
        return Results(recs, sub(self.tables), sub(self.layer), sub(self.model), sub(self.pbench),
                       sub(self.versions), {m: self.machines[m] for m in recs["machine"].unique()},
                       list(self.skipped))


# ----------------------------------------------------------------------------- identity


def version_of(env: dict[str, Any]) -> str:
    """``"0.1.0+1a2b3c4d"`` (``-dirty`` appended for a dirty checkout) from an environment."""
    pkg = (env.get("packages") or {}).get("wcc-bench") or "unknown"
    commit = env.get("commit")
    version = f"{pkg}+{commit[:8] if commit else 'nogit'}"
    return version + "-dirty" if env.get("dirty") else version


def _gpu_name(env: dict[str, Any]) -> str | None:
    if env.get("gpu"):
        return str(env["gpu"])
    nvml = (env.get("probes") or {}).get("nvml")
    if isinstance(nvml, dict) and isinstance(nvml.get("name"), str) and not nvml["name"].startswith("unavailable"):
        return nvml["name"]
    return None


def machine_of(env: dict[str, Any]) -> tuple[str, str]:
    """(stable id, readable label) of the machine an environment describes."""
    host = env.get("hostname") or "unknown-host"
    cpu = (env.get("cpu") or {}).get("model") or "unknown CPU"
    gpu = _gpu_name(env)
    digest = hashlib.sha1(f"{host}|{cpu}|{gpu}".encode()).hexdigest()[:6]
    slug = re.sub(r"[^A-Za-z0-9]+", "-", host).strip("-")[:24] or "host"
    return f"{slug}-{digest}", f"{host} · {cpu} · {gpu or 'no GPU'}"


# ----------------------------------------------------------------------------- files


def record_files(path: str | Path) -> list[Path]:
    """The record files under ``path``: a file, a kind folder (``*.json``) or a results root
    (``<kind>/*.json`` for the known kinds; other folders are not results)."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise LoadError(f"{path}: no such file or directory (expected a results directory or a record file)")
    kinds = [path / k for k in KINDS if (path / k).is_dir()]
    if kinds:
        return sorted(p for k in kinds for p in k.glob("*.json"))
    return sorted(path.glob("*.json"))


def _strict_constant(name: str) -> float:
    raise ValueError(f"non-finite number {name} (results are strict JSON)")


def _strict_float(text: str) -> float:
    # 1e999 is valid JSON syntax but overflows to inf: as non-finite as "Infinity".
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text} is not finite as a float (results are strict JSON)")
    return value


def _read(path: Path) -> tuple[str, dict[str, Any]]:
    try:
        rec = json.loads(path.read_text(encoding="utf-8"), parse_constant=_strict_constant, parse_float=_strict_float)
    except (OSError, ValueError) as exc:
        raise LoadError(f"{path}: not a readable JSON record ({exc})") from None
    m = _SCHEMA_RE.match(str(rec.get("schema", ""))) if isinstance(rec, dict) else None
    if not m or m.group(1) not in KINDS:
        raise LoadError(f"{path}: schema {rec.get('schema') if isinstance(rec, dict) else None!r} is not one of "
                        f"{[f'wcc-bench/{k}/v1' for k in KINDS]}; only results-store records belong here")
    kind = m.group(1)
    missing = [f for f in _REQUIRED[kind] if f not in rec]
    if missing:
        raise LoadError(f"{path}: {kind} record lacks {missing}")
    from bench.store import SchemaError
    from bench.store import validate as full_validate

    try:
        full_validate(kind, rec, parsed_strictly=True)  # json.loads above rejected every non-finite number
    except SchemaError as exc:
        raise LoadError(f"{path}: {exc}") from None
    return kind, rec


def _rows(path: Path, rows: list[dict[str, Any]], fields: tuple[str, ...], what: str) -> None:
    for i, row in enumerate(rows):
        missing = [f for f in fields if f not in row]
        if missing:
            raise LoadError(f"{path}: {what}[{i}] lacks {missing}")


# ----------------------------------------------------------------------------- frames


def _threads(env: dict[str, Any]) -> int | None:
    cpu = (env.get("probes") or {}).get("cpu")
    threads = cpu.get("torch_threads") if isinstance(cpu, dict) else None
    if not isinstance(threads, int):
        threads = (env.get("cpu") or {}).get("torch_threads")
    return threads if isinstance(threads, int) else None


def _table_rows(base: dict[str, Any], rec: dict[str, Any]) -> list[dict[str, Any]]:
    cfg = rec.get("config") or {}
    data = str(rec["data"])
    synthetic = rec.get("synthetic")
    if synthetic is None:  # older records: the data source names it
        synthetic = "synthetic" in data.lower() or "synthstreets" in data.lower()
    row = {**base, "table": rec["table"], "row_id": rec["row"]["id"], "precision": rec["row"]["precision"],
           "shrinkage": rec["row"]["shrinkage"], "data": data, "synthetic": bool(synthetic),
           "profile": rec["profile"], "run_id": rec.get("run_id") or base["record"],
           "device": rec.get("device"), "keep_ratio": cfg.get("keep_ratio"), "act_bits": cfg.get("act_bits"),
           "weight_bits": cfg.get("weight_bits"), "levels": cfg.get("levels"), "config_kind": cfg.get("kind"),
           "bops": rec["bops"], "bops_paper": rec["bops_paper"], "bops_convention": rec.get("bops_convention"),
           "metrics": dict(rec["metrics"]), "metrics_paper": dict(rec.get("metrics_paper") or {}),
           "init_checkpoint": rec.get("init_checkpoint"), "pretrained_backbone": rec.get("pretrained_backbone"),
           "procedure": rec.get("procedure"), "eval_size": rec.get("eval_size")}
    return [row]


def _row_frame(base: dict[str, Any], rows: list[dict[str, Any]], fields: tuple[str, ...],
               extra: dict[str, Any]) -> pd.DataFrame:
    """Rows of one record as a frame (pandas builds it column-wise, far faster than per-row
    dicts); ``base`` and ``extra`` are per-record constants. Samples stay lists until a rank
    test needs them."""
    df = pd.DataFrame.from_records(rows, columns=list(fields))
    for k, v in {**base, **extra}.items():
        df[k] = [v] * len(df) if isinstance(v, (list, dict)) else v
    return df


def _timing_source(rec: dict[str, Any]) -> str:
    """``timing``, or ``timing:process-clock`` for a record timed in CPU time (``--clock process``,
    as ``bench ab`` does): part of the identity, so it is never paired with wall-clock rows, and
    the report's latency tables (``source == "timing"``) leave it out."""
    clock = (rec.get("timer") or {}).get("clock", "wall") if isinstance(rec.get("timer"), dict) else "wall"
    return "timing" if clock == "wall" else f"timing:{clock}-clock"


def _layer_rows(base: dict[str, Any], rec: dict[str, Any], path: Path) -> pd.DataFrame:
    _rows(path, rec["layer_rows"], _LAYER_FIELDS, "layer_rows")
    return _row_frame(base, rec["layer_rows"], tuple(report_columns(LayerRow)),
                      {"source": _timing_source(rec), "device": rec["device"], "session": rec.get("session")})


def _model_rows(base: dict[str, Any], rec: dict[str, Any], path: Path) -> pd.DataFrame:
    _rows(path, rec["model_rows"], _MODEL_FIELDS, "model_rows")
    df = _row_frame(base, rec["model_rows"], tuple(report_columns(ModelRow)),
                    {"source": _timing_source(rec), "device": rec["device"], "session": rec.get("session")})
    df["input"] = ["x".join(str(v) for v in i) for i in df["input"]]
    return df


def _pbench_rows(base: dict[str, Any], rec: dict[str, Any], path: Path) -> pd.DataFrame:
    out = []
    for i, b in enumerate(rec["benchmarks"]):
        stats, info = b.get("stats") or {}, b.get("extra_info") or {}
        if "median" not in stats or "name" not in b:
            raise LoadError(f"{path}: benchmarks[{i}] lacks name or stats.median")
        out.append({"source": "pytest-benchmark", "name": b["name"], "case": info.get("case"),
                    "op": info.get("op"), "backend": info.get("backend"), "median_s": stats["median"],
                    "iqr_s": stats.get("iqr"), "samples": list(stats.get("data") or []),  # with --benchmark-save-data
                    "n_samples": len(stats.get("data") or []),
                    "ratio_to_dense": info.get("ratio_to_dense"), "error": None})
    return _row_frame(base, out, tuple(_COLUMNS["pbench"]), {})


_COLUMNS = {
    "tables": ["table", "row_id", "precision", "shrinkage", "data", "synthetic", "profile", "run_id", "device",
               "keep_ratio", "act_bits", "weight_bits", "levels", "config_kind", "bops", "bops_paper",
               "bops_convention", "metrics", "metrics_paper", "init_checkpoint", "pretrained_backbone", "procedure",
               "eval_size"],
    "layer": ["source", "device", "session", *report_columns(LayerRow)],
    "model": ["source", "device", "session", *report_columns(ModelRow)],
    "pbench": ["source", "name", "case", "op", "backend", "median_s", "iqr_s", "samples", "n_samples", "ratio_to_dense",
               "error"],
}
_BASE = ["version", "machine", "record", "created", "threads"]


def _frame(parts: list[pd.DataFrame], kind: str) -> pd.DataFrame:
    cols = _BASE + _COLUMNS[kind]
    parts = [p for p in parts if len(p)]
    if not parts:
        return pd.DataFrame(columns=cols)
    df = pd.concat(parts, ignore_index=True)[cols]
    df["created"] = pd.to_datetime(df["created"], utc=True)
    return df


def _record_frames(path: Path, kind: str, rec: dict[str, Any]) -> tuple[dict[str, Any], list[tuple[str, pd.DataFrame]]]:
    """One validated record's row of ``Results.records`` and its frames; any field the schema
    lets through but the readers cannot use is a LoadError naming the file, not a traceback."""
    try:
        env = rec["environment"] if isinstance(rec["environment"], dict) else {}
        if kind == "pytest-benchmark" and "probes" not in env:  # the probes also live in machine_info
            env = {**env, "probes": (rec.get("machine_info") or {}).get("wcc_probes")}
        machine, label = machine_of(env)
        base = {"version": version_of(env), "machine": machine, "record": path.stem,
                "created": rec["created"], "threads": _threads(env)}
        row = {**base, "path": str(path), "kind": kind, "commit": env.get("commit"),
               "dirty": env.get("dirty"), "package_version": (env.get("packages") or {}).get("wcc-bench"),
               "environment": env, "energy_source": rec.get("energy_source"),
               "device": rec.get("device"), "_label": label}
        if kind == "tables":
            frames = [("tables", pd.DataFrame(_table_rows(base, rec)))]
        elif kind == "ablation":  # no frame: the report reads the latest record itself (its path is in records)
            frames = []
        elif kind == "timing":
            frames = [("layer", _layer_rows(base, rec, path)), ("model", _model_rows(base, rec, path))]
        else:
            frames = [("pbench", _pbench_rows(base, rec, path))]
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        if isinstance(exc, LoadError):
            raise
        raise LoadError(f"{path}: unusable {kind} record ({type(exc).__name__}: {exc})") from None
    return row, frames


def load_results(paths: str | Path | Iterable[str | Path], validate: bool = True,
                 skip_invalid: bool = False) -> Results:
    """Read every record under ``paths`` into :class:`Results`.

    Every record is validated against its schema (``validate`` is kept for callers; it no
    longer turns anything off). Raises :class:`LoadError` (naming the file and field) for a
    missing path, a file that is not a valid results-store record, or one the readers cannot
    use; with ``skip_invalid`` such a record is left out and listed in ``Results.skipped``.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    files = [f for p in paths for f in record_files(p)]
    records, machines = [], {}
    rows: dict[str, list[pd.DataFrame]] = {"tables": [], "layer": [], "model": [], "pbench": []}
    skipped: list[str] = []
    for path in files:
        try:
            kind, rec = _read(path)
        except LoadError as exc:
            if not skip_invalid:
                raise
            skipped.append(str(exc))
            continue
        try:
            record_row, frames = _record_frames(path, kind, rec)
        except LoadError as exc:
            if not skip_invalid:
                raise
            skipped.append(str(exc))
            continue
        machines[record_row["machine"]] = record_row.pop("_label")
        records.append(record_row)
        for key, frame in frames:
            rows[key].append(frame)
    rec_cols = _BASE + ["path", "kind", "commit", "dirty", "package_version", "environment", "energy_source", "device"]
    rec_df = pd.DataFrame(records, columns=rec_cols)
    if len(rec_df):
        rec_df["created"] = pd.to_datetime(rec_df["created"], utc=True)
    versions = _versions(rec_df)
    return Results(rec_df, _frame(rows["tables"], "tables"), _frame(rows["layer"], "layer"),
                   _frame(rows["model"], "model"), _frame(rows["pbench"], "pbench"), versions, machines, skipped)


def _versions(rec: pd.DataFrame) -> pd.DataFrame:
    cols = ["version", "package_version", "commit", "dirty", "first_created", "last_created", "n_records"]
    if not len(rec):
        return pd.DataFrame(columns=cols)
    g = rec.groupby("version", sort=False)
    out = pd.DataFrame({
        "package_version": g["package_version"].first(), "commit": g["commit"].first(), "dirty": g["dirty"].first(),
        "first_created": g["created"].min(), "last_created": g["created"].max(), "n_records": g.size(),
    }).reset_index()
    # Ordered by the earliest record of each version (ties: by name, so the order is stable).
    return out.sort_values(["first_created", "version"]).reset_index(drop=True)[cols]
