"""The results store: strict JSON records, validated by a schema, written atomically.

Layout: ``<root>/<kind>/<name>.json``, one record per file. Every record carries ``schema``
(``wcc-bench/<kind>/v1``), ``created`` (UTC ISO time), ``environment`` (see
:mod:`bench.environment`) and whatever its kind's schema requires. Records are data: never
edited by hand; reports are generated only from them.

Writes go to a temporary file in the same directory, are fsync'ed, then renamed over the target
(``os.replace`` is atomic on POSIX), so a crash never leaves a half-written record.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from bench.rows import LayerRow, ModelRow, TableRecord, row_schema

__all__ = ["ResultStore", "SchemaError", "atomic_write_text", "validate", "SCHEMAS", "schema_id"]


class SchemaError(ValueError):
    """A record does not match its kind's schema; the message says where."""


_ENV = {
    "type": "object",
    "required": ["commit", "dirty", "python", "packages", "cpu"],
    "properties": {
        "commit": {"type": ["string", "null"]},
        "dirty": {"type": ["boolean", "null"]},
        "python": {"type": "string"},
        "packages": {"type": "object", "additionalProperties": {"type": ["string", "null"]}},
        "cpu": {"type": "object"},
    },
}



def _record_schema(fields: dict[str, Any], environment: dict[str, Any]) -> dict[str, Any]:
    """A record kind's schema: the common header (schema id, time, environment) plus ``fields``."""
    return {**fields, "required": ["schema", "created", "environment", *fields["required"]],
            "properties": {**fields["properties"], "environment": environment}}


# One schema per record kind. Kept here (not in each producer) so the report and compare code
# can rely on them without importing producers; the row-level parts derive from bench.rows.
SCHEMAS: dict[str, dict[str, Any]] = {"tables": _record_schema(row_schema(TableRecord), _ENV)}


# ---- timing (bench.timing): layer and model rows, derived from their typed definitions ----
_LAYER_ROW = row_schema(LayerRow)
_MODEL_ROW = row_schema(ModelRow)
_PROBED_ENV = {  # timing results also carry the device probes (bench.timing.probes)
    "allOf": [_ENV, {"required": ["probes"],
                     "properties": {"probes": {"type": "object", "required": ["cpu", "nvml", "jetson"]}}}],
}
SCHEMAS["timing"] = {
    "type": "object",
    "required": ["schema", "created", "environment", "name", "device", "quick", "grid", "timer", "backends",
                 "energy_source", "layer_rows", "model_rows", "wall_time_s"],
    "properties": {
        "name": {"type": "string"},
        "device": {"type": "string"},
        "quick": {"type": "boolean"},
        "grid": {"type": "object"},
        "timer": {"type": "object"},
        "backends": {"type": "array", "items": {"type": "object", "required": ["name", "available", "reason"]}},
        "energy_source": {"type": "string"},
        "layer_rows": {"type": "array", "items": _LAYER_ROW},
        "model_rows": {"type": "array", "items": _MODEL_ROW},
        "wall_time_s": {"type": "number", "minimum": 0},
        "environment": _PROBED_ENV,
    },
}
# pytest-benchmark's own JSON (``--benchmark-json``), as the retired benchmarks/conftest.py tagged it so that the
# file is a store record: its environment (with probes) and a ratio_to_dense in every extra_info.
SCHEMAS["pytest-benchmark"] = {
    "type": "object",
    "required": ["schema", "created", "environment", "machine_info", "commit_info", "benchmarks"],
    "properties": {
        "environment": _PROBED_ENV,
        "machine_info": {"type": "object", "required": ["wcc_probes"]},
        "benchmarks": {"type": "array", "items": {
            "type": "object", "required": ["name", "stats", "extra_info"],
            "properties": {"extra_info": {"type": "object", "required": ["case", "op", "ratio_to_dense"]},
                           "stats": {"type": "object", "required": ["median", "iqr", "rounds"]}},
        }},
    },
}


def schema_id(kind: str) -> str:
    return f"wcc-bench/{kind}/v1"


def _check_finite(obj: Any, path: str = "$") -> None:
    # Strict JSON: NaN and Infinity are not JSON; store them as null instead.
    if isinstance(obj, float) and not math.isfinite(obj):
        raise SchemaError(f"{path}: non-finite number {obj!r} (store null instead)")
    if isinstance(obj, dict):
        for k, v in obj.items():
            _check_finite(v, f"{path}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            _check_finite(v, f"{path}[{i}]")


def validate(kind: str, record: dict[str, Any]) -> None:
    """Raise :class:`SchemaError` unless ``record`` is a valid record of ``kind``."""
    import jsonschema

    if kind not in SCHEMAS:
        raise SchemaError(f"unknown record kind {kind!r}; known: {sorted(SCHEMAS)}")
    _check_finite(record)
    if record.get("schema") != schema_id(kind):
        raise SchemaError(f"record schema is {record.get('schema')!r}, expected {schema_id(kind)!r}")
    try:
        jsonschema.validate(record, SCHEMAS[kind])
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "(top level)"
        raise SchemaError(f"{kind} record invalid at {where}: {exc.message}") from None


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so readers see the old file or the new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class ResultStore:
    """A directory of validated JSON records, grouped by kind."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def path(self, kind: str, name: str) -> Path:
        if not name or "/" in name or name.startswith("."):
            raise ValueError(f"bad record name {name!r}")
        return self.root / kind / f"{name}.json"

    def new_record(self, kind: str, **fields: Any) -> dict[str, Any]:
        from bench.environment import environment

        rec = {"schema": schema_id(kind), "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "environment": environment()}
        rec.update(fields)
        return rec

    def write(self, kind: str, name: str, record: dict[str, Any]) -> Path:
        validate(kind, record)
        path = self.path(kind, name)
        atomic_write_text(path, json.dumps(record, indent=2, sort_keys=True, allow_nan=False) + "\n")
        return path

    def exists(self, kind: str, name: str) -> bool:
        return self.path(kind, name).is_file()

    def read(self, kind: str, name: str) -> dict[str, Any]:
        path = self.path(kind, name)
        try:
            rec = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise SchemaError(f"{path} is not valid JSON: {exc}") from None
        validate(kind, rec)
        return rec

    def records(self, kind: str) -> Iterator[tuple[str, dict[str, Any]]]:
        """All valid records of ``kind`` as (name, record), sorted by name."""
        folder = self.root / kind
        if not folder.is_dir():
            return
        for path in sorted(folder.glob("*.json")):
            yield path.stem, self.read(kind, path.stem)
