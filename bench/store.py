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
import re
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from bench.rows import LayerRow, ModelRow, ResolutionRow, TableRecord, row_schema

__all__ = ["ResultStore", "SchemaError", "StoreConflictError", "atomic_write_text", "check_record_name",
           "validate", "SCHEMAS", "schema_id"]


class SchemaError(ValueError):
    """A record does not match its kind's schema; the message says where."""


class StoreConflictError(RuntimeError):
    """A write would replace a record that belongs to another run; the message names both."""


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
        # Added with rounds (bench.timing.rounds); optional, so older (one-round) records still load.
        "rounds": {"type": "integer", "minimum": 1},
        "session": {"type": ["string", "null"]},  # records sharing a session had their rounds interleaved
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


# ---- ablation (bench.tables.ablation): one table's rows evaluated at several image sizes ----
SCHEMAS["ablation"] = _record_schema({
    "type": "object",
    "required": ["study", "table", "data", "checkpoints", "rows", "wall_time_s"],
    "properties": {
        "study": {"enum": ["resolution"]},
        "table": {"enum": ["cityscapes", "kitti"]},
        "data": {"type": "string"},
        "synthetic": {"type": "boolean"},
        "run_dir": {"type": ["string", "null"]},
        "checkpoints": {"type": "object", "additionalProperties": {
            "type": "object", "required": ["path", "sha256"],
            "properties": {"path": {"type": "string"}, "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"}}}},
        "rows": {"type": "array", "items": row_schema(ResolutionRow)},
        "wall_time_s": {"type": "number", "minimum": 0},
        "device": {"type": ["string", "null"]},
    },
}, _ENV)


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


_VALIDATORS: dict[str, Any] = {}
_FAST_VALIDATORS: dict[str, Any] = {}


def _validator(kind: str) -> Any:
    # One compiled validator per kind: jsonschema.validate() re-checks the schema itself on
    # every call, which made validating every record on every read too slow to do always.
    if kind not in _VALIDATORS:
        import jsonschema

        cls = jsonschema.validators.validator_for(SCHEMAS[kind])
        _VALIDATORS[kind] = cls(SCHEMAS[kind])
    return _VALIDATORS[kind]


def _fast_validator(kind: str) -> Any:
    """The kind's schema compiled to Python code by fastjsonschema (built once per process), or
    None where fastjsonschema is not installed.

    Even a reused jsonschema validator walked a 2-version full-grid history in ~12 s against
    ~0.9 s for reading it; the compiled check is an order of magnitude faster. It only decides
    valid/invalid: an invalid record is re-checked by jsonschema for its best-match message, so the
    messages stay the same. tests/test_faults.py checks that the two agree on every field.
    """
    if kind not in _FAST_VALIDATORS:
        try:
            import fastjsonschema
        except ImportError:
            _FAST_VALIDATORS[kind] = None
        else:
            _FAST_VALIDATORS[kind] = fastjsonschema.compile(SCHEMAS[kind])
    return _FAST_VALIDATORS[kind]


def _schema_error(kind: str, record: dict[str, Any]) -> str | None:
    """The message of the record's best-matching schema violation, or None when it is valid."""
    import jsonschema

    fast = _fast_validator(kind)
    fast_message = None
    if fast is not None:
        import fastjsonschema

        try:
            fast(record)
            return None
        except fastjsonschema.JsonSchemaValueException as exc:
            where = "/".join(str(p) for p in (exc.path or [])[1:]) or "(top level)"
            fast_message = f"{kind} record invalid at {where}: {exc.message}"
    error = jsonschema.exceptions.best_match(_validator(kind).iter_errors(record))
    if error is None:
        # Only where the two implementations disagree: the stricter verdict stands.
        return fast_message
    where = "/".join(str(p) for p in error.absolute_path) or "(top level)"
    return f"{kind} record invalid at {where}: {error.message}"


def validate(kind: str, record: dict[str, Any], *, parsed_strictly: bool = False) -> None:
    """Raise :class:`SchemaError` unless ``record`` is a valid record of ``kind``.

    Types are enforced (the schema) and non-finite numbers rejected, wherever they are; the
    message names the field. ``parsed_strictly``: the record was just parsed from JSON with
    non-finite numbers (``NaN``, ``Infinity``, ``1e999``) rejected by the parser itself
    (bench.report.load does), so the walk looking for them is skipped - it cost a third of a
    full-grid history's validation.
    """
    if kind not in SCHEMAS:
        raise SchemaError(f"unknown record kind {kind!r}; known: {sorted(SCHEMAS)}")
    if not isinstance(record, dict):
        raise SchemaError(f"a {kind} record must be a JSON object, got {type(record).__name__}")
    if not parsed_strictly:
        _check_finite(record)
    if record.get("schema") != schema_id(kind):
        raise SchemaError(f"record schema is {record.get('schema')!r}, expected {schema_id(kind)!r}")
    message = _schema_error(kind, record)
    if message is not None:
        raise SchemaError(message)


_NAME_RE = re.compile(r"^[A-Za-z0-9_+-][A-Za-z0-9_.+-]{0,199}$")


def check_record_name(name: str) -> None:
    """Raise ``ValueError`` unless ``name`` is a safe record file name (commands call this on
    their arguments before any work, so a bad ``--name`` costs nothing)."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ValueError(f"bad record name {name!r}: use 1-200 letters, digits and . _ + - (not starting with "
                         f"'.'; no '/'), e.g. cpu-quick-1")


def _umask_mode(base: int = 0o666) -> int:
    mask = os.umask(0)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return base & ~mask


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so readers see the old file or the new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp makes 0600 files; records are for everyone the umask lets read them.
        os.chmod(tmp, _umask_mode())
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
        check_record_name(name)
        return self.root / kind / f"{name}.json"

    def new_record(self, kind: str, **fields: Any) -> dict[str, Any]:
        from bench.environment import environment

        rec = {"schema": schema_id(kind), "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "environment": environment()}
        rec.update(fields)
        return rec

    def write(self, kind: str, name: str, record: dict[str, Any]) -> Path:
        """Validate and write ``record`` as ``kind/name.json`` (atomically).

        Raises :class:`StoreConflictError` when a record of that name already exists and
        belongs to another run (a different ``run_id``): one run never replaces another's.
        """
        validate(kind, record)
        path = self.path(kind, name)
        if path.is_file() and record.get("run_id") is not None:
            try:
                owner = json.loads(path.read_text(encoding="utf-8")).get("run_id")
            except (json.JSONDecodeError, AttributeError, OSError):
                owner = None  # unreadable: resume reports it; nothing of another run to protect
            if owner is not None and owner != record["run_id"]:
                raise StoreConflictError(
                    f"{path} belongs to run {owner!r}; run {record['run_id']!r} would replace it. Two runs "
                    f"produced the same record name: give one of them another --results folder"
                )
        atomic_write_text(path, json.dumps(record, indent=2, sort_keys=True, allow_nan=False) + "\n")
        return path

    def exists(self, kind: str, name: str) -> bool:
        return self.path(kind, name).is_file()

    def read(self, kind: str, name: str) -> dict[str, Any]:
        path = self.path(kind, name)
        try:
            rec = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise SchemaError(f"{path} is not valid JSON: {exc}") from None
        try:
            validate(kind, rec)
        except SchemaError as exc:
            raise SchemaError(f"{path}: {exc}") from None
        return rec

    def records(self, kind: str) -> Iterator[tuple[str, dict[str, Any]]]:
        """All valid records of ``kind`` as (name, record), sorted by name."""
        folder = self.root / kind
        if not folder.is_dir():
            return
        for path in sorted(folder.glob("*.json")):
            yield path.stem, self.read(kind, path.stem)
