"""The typed result rows of the results store: one definition per row kind.

A timing record (:mod:`bench.store`, kind ``timing``) holds ``layer_rows`` and ``model_rows``;
a ``tables`` record is one measured row of a published table (:class:`TableRecord`). Each is a
frozen dataclass here, and everything else is derived from it:

* the JSON schema the store validates against (:func:`row_schema`);
* the columns the reports read (:func:`report_columns`) and the fields the loader insists on
  (:func:`required_report_fields`);
* the measurement identity the regression rules pair on (:func:`identity_type`): a named tuple
  of the record's context (source, device, threads) and the row's ``key`` fields, never a
  joined string.

Producers (:mod:`bench.timing.layer`, :mod:`bench.timing.model`, :mod:`bench.tables.run`)
build rows through these classes, so a field added here reaches the schema, the reports and the identities at once.
Field metadata: ``key`` (part of the identity), ``report`` (a report column), ``required``
(the schema requires it; fields added later are optional so that old records still load) and
``schema`` (JSON-schema keywords merged into the derived type).
"""

from __future__ import annotations

import collections
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, Union

__all__ = [
    "TimedRow", "LayerRow", "ModelRow", "TableRecord", "ResolutionRow",
    "DTYPES", "LAYER_OPS", "RUNTIME_OPS", "DIRECTIONS", "row_schema",
    "report_columns", "required_report_fields", "check_one_of", "identity_type", "key_fields", "CONTEXT",
    "LayerKey", "ModelKey", "AccuracyKey", "PytestBenchmarkKey",
]

Dtype = Literal["float32", "float16", "bfloat16"]
Direction = Literal["fwd", "fwdbwd"]
DTYPES: tuple[str, ...] = typing.get_args(Dtype)
DIRECTIONS: tuple[str, ...] = typing.get_args(Direction)
#: The deployed dense baselines, by op name (:mod:`bench.timing.runtimes` builds them; the names
#: live here so the schema needs no torch).
RUNTIME_OPS: tuple[str, ...] = ("ort_fp32", "ort_int8", "inductor_fp32", "openvino_fp32", "openvino_int8",
                                "tensorrt_fp16", "tensorrt_int8")
#: Every op of the layer grid: WCC, the eager dense ops, QuantConv2d and the deployed baselines.
LAYER_OPS: tuple[str, ...] = ("wcc", "dense_nchw", "dense_cl", "matmul", "quantconv", *RUNTIME_OPS)


def _meta(key: bool = False, report: bool = True, required: bool = True, **schema: Any) -> dict[str, Any]:
    return {"key": key, "report": report, "required": required, "schema": schema}


def _f(default: Any = dataclasses.MISSING, **meta: Any) -> Any:
    """A field with row metadata (see the module docstring)."""
    if default is dataclasses.MISSING:
        return field(metadata=_meta(**meta))
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=_meta(**meta))
    return field(default=default, metadata=_meta(**meta))


#: One round's summary of a row (seconds per call); ``error`` where the row failed in that round.
_ROUND = {"type": "object", "required": ["median_s", "iqr_s", "n_samples"],
          "properties": {"median_s": {"type": ["number", "null"], "minimum": 0},
                         "iqr_s": {"type": ["number", "null"], "minimum": 0},
                         "n_samples": {"type": "integer", "minimum": 0},
                         "error": {"type": ["string", "null"]}}}


@dataclass(frozen=True, kw_only=True)
class TimedRow:
    """What every timed row carries (:class:`bench.timing.harness.Timing` plus the outcome).

    ``error`` is set exactly when nothing was timed; then the statistics are null / empty.
    Times are seconds per call; ``samples`` are the raw per-sample times (of every round).
    """

    median_s: float | None = _f(None)
    iqr_s: float | None = _f(None)
    n_samples: int = _f(0, minimum=0)
    samples: list[float] = _f([], schema_items={"type": "number", "minimum": 0})
    number: int = _f(0, report=False, minimum=0)
    warmup: int = _f(0, report=False, required=False)
    ratio_to_dense: float | None = _f(None)
    error: str | None = _f(None)
    energy: dict[str, Any] | None = _f(None, report=False)
    # Added with the deployed baselines and the floor; optional, so older records still load.
    ratio_to_best_runtime: float | None = _f(None, required=False)
    best_runtime_median_s: float | None = _f(None, required=False)
    runtime: str | None = _f(None, required=False)  # "<package> <version>" that computed the row
    precision: str | None = _f(None, required=False)  # fp32, fp16, bf16, int8
    max_rel_err: float | None = _f(None, required=False)  # deployed baselines: against eager float32
    setup_s: float | None = _f(None, required=False, report=False)  # export, calibration, compilation
    floor_s: float | None = _f(None, required=False)  # roofline lower bound (bench.timing.floor)
    floor_bytes: int | None = _f(None, required=False, report=False)
    floor_macs: int | None = _f(None, required=False, report=False)
    floor_precision: str | None = _f(None, required=False, report=False)
    floor_ratio: float | None = _f(None, required=False)
    # Added with rounds (bench.timing.rounds): one summary per round, each round a fresh process that timed
    # every row once; ``median_s`` is then the median of the round medians and ``samples`` pools the rounds'.
    # Absent or null (older records): the row is one round.
    rounds: list[dict[str, Any]] | None = _f(None, required=False, schema_items=_ROUND)

    def to_dict(self) -> dict[str, Any]:
        """The row as stored (plain JSON types)."""
        return dataclasses.asdict(self)


@dataclass(frozen=True, kw_only=True)
class LayerRow(TimedRow):
    """One op timed on one 1x1 conv shape (:mod:`bench.timing.layer`).

    ``backend``/``keep_ratio``/``levels`` are set for ``op="wcc"`` only. ``dense_op`` and
    ``dense_median_s`` name the best dense op of the row's group (same shape set, shape,
    direction, dtype), which ``ratio_to_dense`` divides by.
    """

    shape_set: str = _f(key=True)
    shape: dict[str, int] = _f(report=False, schema={"type": "object",
                                                     "required": ["batch", "c_in", "c_out", "height", "width"],
                                                     "additionalProperties": {"type": "integer", "minimum": 1}})
    shape_label: str = _f(key=True)
    op: str = _f(key=True, schema={"enum": list(LAYER_OPS)})
    direction: Direction = _f(key=True)
    dtype: Dtype = _f(key=True)
    backend: str | None = _f(key=True)
    keep_ratio: float | None = _f(key=True)
    levels: int | None = _f(key=True)
    dense_op: str | None = _f(None)
    dense_median_s: float | None = _f(None, required=False)
    best_runtime_op: str | None = _f(None, required=False)


@dataclass(frozen=True, kw_only=True)
class ModelRow(TimedRow):
    """One model variant timed end to end, with its memory (:mod:`bench.timing.model`).

    ``input`` is ``[N, 3, H, W]``; ``backend`` is set for WCC variants only; the memory fields
    are bytes (null when not measured, ``memory_error`` says why).
    """

    model: str = _f(key=True)
    variant: str = _f(key=True)
    backend: str | None = _f(key=True)
    input: list[int] = _f(key=True, schema_items={"type": "integer", "minimum": 1}, minItems=4, maxItems=4)
    dtype: Dtype = _f(key=True)
    keep_ratio: float | None = _f()
    peak_mem_bytes: int | None = _f(None)
    train_saved_bytes: int | None = _f(None)
    train_peak_bytes: int | None = _f(None)
    peak_mem_method: str | None = _f(None, report=False, required=False)
    memory_error: str | None = _f(None, required=False)
    runtime_op: str | None = _f(None, required=False)  # the deployed baseline of a dense row
    best_runtime: str | None = _f(None, required=False)  # variant label of the fastest dense row


def check_one_of(name: str, value: Any, choices: Any) -> None:
    """Raise a ValueError naming ``name`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")


_METRICS = {"type": "object", "additionalProperties": {"type": ["number", "null"]}}
_FILE_REF = {"type": ["object", "null"], "required": ["path", "sha256"],
             "properties": {"path": {"type": "string"}, "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"}}}


@dataclass(frozen=True, kw_only=True)
class TableRecord:
    """One row of a published table, trained and evaluated here (:mod:`bench.tables.run`).

    The fields of a ``tables`` record besides ``schema``, ``created`` and ``environment``.
    ``row`` is ``{"id", "precision", "shrinkage", "parent"}`` as in the sweep; ``data`` names the
    data source (SynthStreets rows say so); ``metrics`` are the measured values (null when not
    finite) and ``metrics_paper`` the published ones; BOPs are billions at the paper's
    resolution under ``bops_convention`` (``bops_actual``: the actual convention).
    """

    table: Literal["cityscapes", "kitti"] = _f(key=True)
    row: dict[str, Any] = _f(schema={"type": "object", "required": ["id", "precision", "shrinkage"]})
    profile: str = _f(key=True)
    data: str = _f(key=True)
    synthetic: bool | None = _f(None, required=False)
    run_id: str | None = _f(None, required=False)
    config: dict[str, Any] | None = _f(report=False)  # the report reads it flattened, where present
    recipe: dict[str, Any] | None = _f(None, required=False, report=False)
    metrics: dict[str, Any] = _f(schema=_METRICS)
    metrics_paper: dict[str, Any] = _f({}, required=False, schema=_METRICS)
    bops: float = _f()
    bops_convention: str | None = _f(None, required=False)
    bops_actual: float | None = _f(None, required=False, report=False)
    bops_paper: float = _f()
    bops_input: list[int] | None = _f(None, required=False, report=False)
    wall_time_s: float = _f(report=False)
    train_time_s: float | None = _f(None, required=False, report=False)
    eval_time_s: float | None = _f(None, required=False, report=False)
    device: str | None = _f(None, required=False)
    # Where the table's FP32 row started (docs/design.md §4.1), each {"path", "sha256"} or null:
    # a whole-model checkpoint evaluated as it is (--init-checkpoint), or ImageNet weights for
    # the backbone (--pretrained-backbone). Every row of the table descends from that start.
    init_checkpoint: dict[str, Any] | None = _f(None, required=False, report=False, schema=_FILE_REF)
    pretrained_backbone: dict[str, Any] | None = _f(None, required=False, report=False, schema=_FILE_REF)
    # "staged" (bench tables: trained or fine-tuned from the parent row), "evaluated" (bench
    # evaluate, the checkpoint as it is) or "post-training" (bench evaluate, converted with no
    # fine-tuning); eval_size is [H, W] of the evaluated images, null for the data's own size.
    procedure: str | None = _f(None, required=False, schema={"enum": ["staged", "evaluated", "post-training", None]})
    # A post-training conversion of an already converted stage: how its learned activation clips
    # started the new layers' (wcc.layers.CLIP_HANDOVERS); null otherwise (a staged row's recipe says).
    clip_handover: str | None = _f(None, required=False, report=False,
                                   schema={"enum": ["carry", "transform-gain", None]})
    eval_size: list[int] | None = _f(None, required=False, report=False,
                                     schema_items={"type": "integer", "minimum": 1}, minItems=2, maxItems=2)

    def to_dict(self) -> dict[str, Any]:
        """The record's fields as stored (plain JSON types)."""
        return dataclasses.asdict(self)


@dataclass(frozen=True, kw_only=True)
class ResolutionRow:
    """One point of the resolution ablation (:mod:`bench.tables.ablation`): one table row's
    checkpoint evaluated at one image size.

    ``feature_map`` is ``[H, W]`` of the deepest feature map the WCC layers see (stride 16 for
    DeepLabV3+, 32 for the depth encoder); ``drop_vs_q8_8`` each metric minus the 8/8 row's at
    the same size (null for the 8/8 row's own missing values).
    """

    row_id: str = _f(key=True)
    precision: str = _f()
    shrinkage: str = _f()
    eval_size: list[int] = _f(key=True, schema_items={"type": "integer", "minimum": 1}, minItems=2, maxItems=2)
    feature_map: list[int] = _f(schema_items={"type": "integer", "minimum": 1}, minItems=2, maxItems=2)
    metrics: dict[str, Any] = _f(schema=_METRICS)
    drop_vs_q8_8: dict[str, Any] = _f(schema=_METRICS)
    eval_time_s: float = _f(minimum=0)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ----------------------------------------------------------------------------- derived views

_JSON_TYPES = {str: "string", int: "integer", float: "number", bool: "boolean", dict: "object", list: "array"}


def _type_schema(tp: Any) -> dict[str, Any]:
    """JSON schema of a field's annotation (the few forms the rows use)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return {"enum": list(args)}
    if origin in (Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        if len(inner) != 1:
            raise TypeError(f"unsupported union {tp}")
        schema = _type_schema(inner[0])
        if "enum" in schema:
            return {"enum": [*schema["enum"], None]}
        return {**schema, "type": [schema["type"], "null"]}
    base = origin or tp
    if base not in _JSON_TYPES:
        raise TypeError(f"no JSON type for {tp}")
    return {"type": _JSON_TYPES[base]}


def _fields(cls: type) -> list[dataclasses.Field[Any]]:
    return list(dataclasses.fields(cls))


def row_schema(cls: type) -> dict[str, Any]:
    """The JSON schema of one stored row of ``cls`` (what :mod:`bench.store` validates)."""
    hints = typing.get_type_hints(cls)
    props: dict[str, Any] = {}
    for f in _fields(cls):
        meta = f.metadata
        prop = meta["schema"].get("schema") or _type_schema(hints[f.name])
        extra = {k: v for k, v in meta["schema"].items() if k != "schema"}
        if "schema_items" in extra:
            prop = {**prop, "items": extra.pop("schema_items")}
        props[f.name] = {**prop, **extra}
    schema: dict[str, Any] = {
        "type": "object",
        "required": [f.name for f in _fields(cls) if f.metadata["required"]],
        "properties": props,
    }
    if not issubclass(cls, TimedRow):
        return schema
    return {
        **schema,
        # A row without error has real statistics.
        "if": {"properties": {"error": {"type": "null"}}},
        "then": {"properties": {"median_s": {"type": "number", "minimum": 0}, "iqr_s": {"type": "number", "minimum": 0},
                                "n_samples": {"type": "integer", "minimum": 1},
                                "samples": {"type": "array", "minItems": 1}}},
    }


def report_columns(cls: type) -> list[str]:
    """The fields of ``cls`` the reports read, in declaration order."""
    return [f.name for f in _fields(cls) if f.metadata["report"]]


def required_report_fields(cls: type) -> list[str]:
    """Report columns every stored row must have (the others default to null when absent)."""
    return [f.name for f in _fields(cls) if f.metadata["report"] and f.metadata["required"]]


def key_fields(cls: type) -> tuple[str, ...]:
    """The fields of ``cls`` that identify what was measured (not how fast it ran)."""
    return tuple(f.name for f in _fields(cls) if f.metadata["key"])


#: The record-level facts that are part of every timing identity: who produced the row
#: (``timing`` or ``pytest-benchmark``), on which device, with how many torch threads.
CONTEXT = ("source", "device", "threads")


def identity_type(cls: type[TimedRow]) -> type:
    """A named tuple of :data:`CONTEXT` plus the key fields of ``cls``: the identity of a measurement."""
    return collections.namedtuple(f"{cls.__name__.removesuffix('Row')}Key", (*CONTEXT, *key_fields(cls)))


# Typed as Any: they are built from the rows at import time, which a static checker cannot follow.
LayerKey: Any = identity_type(LayerRow)
ModelKey: Any = identity_type(ModelRow)


#: Identity of an accuracy measurement: the record's key fields and the table row's id.
AccuracyKey: Any = collections.namedtuple("AccuracyKey", (*key_fields(TableRecord), "row_id"))  # type: ignore[misc]
#: Identity of a benchmark in a (retired) pytest-benchmark record.
PytestBenchmarkKey: Any = collections.namedtuple("PytestBenchmarkKey", ("source", "threads", "name"))
