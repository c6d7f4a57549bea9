"""Regression rules: what counts as improved, regressed or unchanged between two sets of results.

Everything measured becomes one row of a long *measurements* frame (:func:`measurements`):
``(machine, bench, key, metric) -> value (+ raw samples)``. ``key`` is the measurement's identity,
a named tuple derived from the typed rows (:mod:`bench.rows`): layer, :data:`bench.rows.LayerKey`
(source, device, torch threads, shape set, shape, op, direction, dtype, backend, keep ratio,
levels); model, :data:`bench.rows.ModelKey` (source, device, threads, model, variant, backend,
input, dtype); accuracy, :data:`bench.rows.AccuracyKey` (table, profile, data source, row). Two
values are compared only when machine, bench, key and metric are all equal - never across
machines or configurations.

Rules (:class:`Rules`):

* **timing** (median seconds, lower is better): the verdict is computed on the rounds' medians,
  never on pooled raw samples (:mod:`bench.report.verdict` states the statistic): regressed when
  the change is past ``factor`` (default 1.1) and its test of no change is a discovery of the
  step-up over the machine's timing rows compared together (Benjamini-Hochberg at ``alpha``);
  improved symmetrically. WCC and QuantConv2d layer rows are judged relative to the dense layer
  rows of the same rounds (:func:`bench.report.verdict.relative_to_reference`: a slow process
  slows every row of its round), the dense rows raw; *inconclusive*
  when neither and the band between rounds is wider than the factor (it never fails a gate);
  otherwise unchanged. Records taken in separate sessions (different ``session``) also carry
  the run-to-run noise of the machine: ``run_to_run_sd`` where calibrated, else anything past
  the factor is inconclusive (``bench ab`` interleaves both sides in one session instead). A case
  that ran before and now fails is regressed; the reverse improved.
  WCC and QuantConv2d layer rows must also pass a *drift check* (``drift_check``): their time
  relative to the best dense op of the same shape, measured in the same runs, must have moved
  past the factor as well. A shared machine that got slower between two runs slows the dense
  baselines too; such rows stay unchanged, with a note (the dense rows themselves still report
  the drift).
* **memory** (bytes, lower is better): the factor ``memory_factor`` alone (one measurement).
* **accuracy**: a per-metric :class:`Tolerance` (absolute or relative, with the metric's
  direction); a metric that turns null (non-finite) is regressed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import pandas as pd

from bench.baseline import best_dense
from bench.rows import AccuracyKey, LayerKey, ModelKey, PytestBenchmarkKey

__all__ = ["Tolerance", "Rules", "ACCURACY_TOLERANCES", "measurements", "compare", "history", "unmatched",
           "family", "group_summary", "STATUSES", "COMPARE_COLUMNS"]

STATUSES = ("regressed", "improved", "unchanged", "inconclusive")


@dataclass(frozen=True)
class Tolerance:
    """How much a metric may get worse: ``abs`` (absolute) or ``rel`` (fraction of the base)."""

    higher_is_better: bool
    abs: float | None = None
    rel: float | None = None

    def __post_init__(self) -> None:
        if (self.abs is None) == (self.rel is None):
            raise ValueError("give exactly one of abs= and rel=")

    def allowed(self, base: float) -> float:
        if self.abs is not None:
            return self.abs
        assert self.rel is not None  # __post_init__: exactly one is set
        return self.rel * abs(base)

    def describe(self) -> str:
        size = f"{self.abs:g} absolute" if self.abs is not None else f"{self.rel:.0%} relative"
        return f"{'drop' if self.higher_is_better else 'rise'} > {size}"


#: Accuracy metrics that are compared, with their tolerances (others, e.g. per-class IoU, are not).
ACCURACY_TOLERANCES: dict[str, Tolerance] = {
    "miou": Tolerance(higher_is_better=True, abs=0.01),
    "abs_rel": Tolerance(higher_is_better=False, rel=0.05),
    "rmse": Tolerance(higher_is_better=False, rel=0.05),
    "sq_rel": Tolerance(higher_is_better=False, rel=0.05),
    "rmse_log": Tolerance(higher_is_better=False, rel=0.05),
    "a1": Tolerance(higher_is_better=True, abs=0.01),
}


@dataclass(frozen=True)
class Rules:
    factor: float = 1.1
    alpha: float = 0.01
    memory_factor: float = 1.1
    accuracy: Mapping[str, Tolerance] = field(default_factory=lambda: dict(ACCURACY_TOLERANCES))
    drift_check: bool = True
    #: machine id -> sd of log time between separately taken runs (a calibration of that machine's
    #: run-to-run noise); machines without one get "inconclusive" past the factor across sessions.
    run_to_run_sd: Mapping[str, float] = field(default_factory=dict)
    #: machine id -> the setting (row ``source``, threads) its run-to-run sd was measured under
    #: (:data:`bench.report.calibration.Setting`); the sd applies only to rows of that setting. A
    #: machine without an entry here: to every setting.
    calibrated_setting: Mapping[str, tuple[str, str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.factor > 1 or not self.memory_factor > 1:
            raise ValueError(f"factors must be > 1, got factor={self.factor}, memory_factor={self.memory_factor}")
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}")

    def describe(self) -> list[str]:
        out = [f"timing: on the rounds' medians (WCC / QuantConv2d layer rows relative to the dense rows of the "
               f"same round), change past x{self.factor:g} and a discovery of the Benjamini-Hochberg step-up over the "
               f"rows at {self.alpha:g}; inconclusive when the band between rounds is wider than x{self.factor:g}; "
               f"separately taken records: run-to-run noise "
               + (f"calibrated for {len(self.run_to_run_sd)} machine(s)" if self.run_to_run_sd else
                  "not calibrated, so past the factor is inconclusive (use bench ab)"),
               f"memory: more than x{self.memory_factor:g} (single measurement)"]
        if self.drift_check:
            out.insert(1, f"WCC / QuantConv2d layer timing: also x{self.factor:g} relative to the best dense op of "
                          f"the same shape in the same runs (a machine that drifted moves both)")
        out += [f"{m}: {t.describe()}" for m, t in self.accuracy.items()]
        return out


# ----------------------------------------------------------------------------- measurements

_MEAS_COLUMNS = ["version", "machine", "created", "bench", "key", "label", "metric", "rule", "value", "samples",
                 "error", "rounds", "session"]
_MEMORY_METRICS = ("peak_mem_bytes", "train_saved_bytes", "train_peak_bytes")


def _opt(v: Any) -> Any:
    """None for missing values (None, NaN, pandas NA)."""
    return None if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)) else v


def _num(v: Any) -> str:
    """A keep ratio / level count / thread count as text: ``0.25``, ``3``, ``-`` when missing."""
    v = _opt(v)
    return "-" if v is None else f"{v:g}" if isinstance(v, (int, float)) else str(v)


def _col(df: pd.DataFrame, name: str) -> list[Any]:
    return df[name].tolist()


def _frame(df: pd.DataFrame, bench: str, keys: list[Any], labels: list[str], metric: str, rule: str,
           value: Any, samples: Any, error: Any, rounds: Any = None) -> pd.DataFrame:
    session = df["session"].to_numpy() if "session" in df else None
    return pd.DataFrame({"version": df["version"].to_numpy(), "machine": df["machine"].to_numpy(),
                         "created": df["created"].to_numpy(), "bench": bench, "key": keys, "label": labels,
                         "metric": metric, "rule": rule, "value": value, "samples": samples, "error": error,
                         "rounds": rounds, "session": session})


def _round_medians(df: pd.DataFrame) -> list[list[float | None] | None]:
    """Per row, its rounds' medians; a row without ``rounds`` (older records) is one round, its median."""
    out: list[list[float | None] | None] = []
    per_row = df["rounds"] if "rounds" in df else [None] * len(df)
    for rounds, med in zip(per_row, df["median_s"]):
        if isinstance(rounds, list) and rounds:
            # A failed round stays as None: round k of every row is the k-th process, which is
            # what judging rows relative to their round's dense rows relies on.
            vals = [r.get("median_s") if isinstance(r, dict) else None for r in rounds]
            out.append([None if v is None else float(v) for v in vals])
        else:
            med = _opt(med)
            out.append(None if med is None else [float(med)])
    return out


def _accuracy(df: pd.DataFrame, rules: Rules) -> list[pd.DataFrame]:
    if not len(df):
        return []
    fields: tuple[str, ...] = AccuracyKey._fields
    keys = [AccuracyKey._make(parts) for parts in zip(*(_col(df, c) for c in fields))]
    labels = [f"{'Cityscapes-table' if t == 'cityscapes' else 'KITTI-table'} {pr} {sh} [{p}; {d}]" for t, pr, sh, p, d
              in zip(_col(df, "table"), _col(df, "precision"), _col(df, "shrinkage"), _col(df, "profile"),
                     _col(df, "data"))]
    out = []
    for metric in rules.accuracy:
        has = [metric in m for m in df["metrics"]]
        if not any(has):
            continue
        sub = df[has]
        values = [_opt(m[metric]) for m in sub["metrics"]]
        out.append(_frame(sub, "accuracy", [k for k, h in zip(keys, has) if h], [lb for lb, h in zip(labels, has) if h],
                          metric, "accuracy", values, None, None))
    return out


def _layer(df: pd.DataFrame) -> list[pd.DataFrame]:
    if not len(df):
        return []
    keys, labels = [], []
    # Numbers as text (``0.25``, ``-``), so equal settings are equal keys (NaN never is).
    numeric = ("threads", "keep_ratio", "levels")
    cols = [[_num(v) for v in _col(df, c)] if c in numeric else [_opt(v) for v in _col(df, c)]
            for c in LayerKey._fields]
    for key in map(LayerKey._make, zip(*cols)):
        keys.append(key)
        name = f"wcc[{key.backend} k={key.keep_ratio} J={key.levels}]" if key.op == "wcc" else key.op
        labels.append(f"{key.shape_set} {key.shape_label} {key.direction} {key.dtype} {name} "
                      f"({key.device}, {key.threads} thr)")
    return [_frame(df, "layer", keys, labels, "time", "timing", df["median_s"].to_numpy(), df["samples"].to_numpy(),
                   df["error"].to_numpy(), _round_medians(df))]


def _model(df: pd.DataFrame) -> list[pd.DataFrame]:
    if not len(df):
        return []
    keys, labels = [], []
    cols = [[_num(v) for v in _col(df, c)] if c == "threads" else [_opt(v) for v in _col(df, c)]
            for c in ModelKey._fields]
    for key in map(ModelKey._make, zip(*cols)):
        keys.append(key)
        backend = f" [{key.backend}]" if key.backend else ""
        labels.append(f"{key.model} {key.input} {key.dtype} {key.variant}{backend} ({key.device}, {key.threads} thr)")
    out = [_frame(df, "model", keys, labels, "time", "timing", df["median_s"].to_numpy(), df["samples"].to_numpy(),
                  df["error"].to_numpy(), _round_medians(df))]
    mem_error = [_opt(e) or _opt(m) for e, m in zip(_col(df, "error"), _col(df, "memory_error"))]
    for metric in _MEMORY_METRICS:
        out.append(_frame(df, "model", keys, labels, metric, "memory", df[metric].to_numpy(), None, mem_error))
    return out


def _pbench(df: pd.DataFrame) -> list[pd.DataFrame]:
    if not len(df):
        return []
    keys = [PytestBenchmarkKey("pytest-benchmark", _num(t), n) for t, n in zip(_col(df, "threads"), _col(df, "name"))]
    labels = [f"{n} ({_num(t)} thr)" for t, n in zip(_col(df, "threads"), _col(df, "name"))]
    return [_frame(df, "pytest-benchmark", keys, labels, "time", "timing", df["median_s"].to_numpy(),
                   df["samples"].to_numpy(), df["error"].to_numpy(), _round_medians(df))]


def measurements(results: Any, rules: Rules | None = None) -> pd.DataFrame:
    """Everything in ``results`` (a :class:`bench.report.load.Results`) as one long frame."""
    rules = rules or Rules()
    parts = _accuracy(results.tables, rules) + _layer(results.layer) + _model(results.model) + _pbench(results.pbench)
    if not parts:
        return pd.DataFrame(columns=_MEAS_COLUMNS)
    meas = pd.concat(parts, ignore_index=True)[_MEAS_COLUMNS]
    # One spelling of "missing" (None) in the object columns the rules read.
    meas["error"] = [_opt(e) for e in meas["error"]]
    return meas


# ----------------------------------------------------------------------------- comparing

_ID = ["machine", "bench", "key", "metric"]
COMPARE_COLUMNS = ["machine", "bench", "label", "metric", "rule", "base_version", "new_version", "base", "new",
                   "change", "band", "status", "note", "key"]


def _latest(meas: pd.DataFrame, order: list[str] | None = None) -> pd.DataFrame:
    """One measurement per (machine, bench, key, metric): the last version in ``order`` (else the
    newest record) wins."""
    if order is not None:
        rank = {v: i for i, v in enumerate(order)}
        meas = meas.assign(_rank=meas["version"].map(rank)).sort_values(["_rank", "created"], kind="stable")
        meas = meas.drop(columns="_rank")
    else:
        meas = meas.sort_values("created", kind="stable")
    return meas.drop_duplicates(_ID, keep="last")


def _timing(row: dict[str, Any], rules: Rules) -> tuple[str, float | None, float | None, str]:
    """(status, change = new/base, band, note) of one timing pair: its round verdict, made for the
    machine's rows together (:func:`_round_verdicts`)."""
    b_err, n_err = row["error_base"], row["error_new"]
    if b_err or n_err:
        if b_err and n_err:
            return "unchanged", None, None, f"fails in both: {n_err}"
        if n_err:
            return "regressed", None, None, f"now fails: {n_err}"
        return "improved", None, None, f"now runs (failed before: {b_err})"
    v = row.get("_verdict")
    if v is None:
        return "unchanged", None, None, "no median to compare"
    rounds = f"{len(_positive(row['rounds_base']))} vs {len(_positive(row['rounds_new']))} rounds"
    return v.status, v.change, v.band, f"{rounds}; {v.note}" if v.note else rounds


def _positive(rounds: Any) -> list[float]:
    """The usable round medians of a row (positive numbers; a failed round has none)."""
    return [float(v) for v in rounds or [] if v is not None and v == v and v > 0]


def _memory(row: dict[str, Any], rules: Rules) -> tuple[str, float | None, float | None, str]:
    base, new = row["value_base"], row["value_new"]
    if base is None or new is None:
        why = row["error_new"] or row["error_base"] or "not measured"
        return "unchanged", None, None, f"not comparable: {why}"
    if not base > 0:
        return "unchanged", None, None, "base is 0"
    ratio = new / base
    if ratio > rules.memory_factor:
        return "regressed", ratio, None, ""
    if ratio < 1 / rules.memory_factor:
        return "improved", ratio, None, ""
    return "unchanged", ratio, None, ""


def _accuracy_rule(row: dict[str, Any], rules: Rules) -> tuple[str, float | None, float | None, str]:
    tol = rules.accuracy[row["metric"]]
    base, new = row["value_base"], row["value_new"]
    if base is None and new is None:
        return "unchanged", None, None, "null in both"
    if new is None:
        return "regressed", None, None, "now null (non-finite result)"
    if base is None:
        return "improved", None, None, "finite now (null before)"
    delta = new - base
    worse = -delta if tol.higher_is_better else delta
    allowed = tol.allowed(base)
    if worse > allowed:
        return "regressed", delta, None, f"tolerance: {tol.describe()}"
    if -worse > allowed:
        return "improved", delta, None, ""
    return "unchanged", delta, None, ""


_RULES = {"timing": _timing, "memory": _memory, "accuracy": _accuracy_rule}

_CHECKED_OPS = ("wcc", "quantconv")


def _layer_group(key: Any) -> Any:
    """The configuration a layer key shares with its dense baselines (op and WCC settings cleared),
    or None for a key that is not a layer identity."""
    if not isinstance(key, LayerKey):
        return None
    return key._replace(op=None, backend=None, keep_ratio=None, levels=None)


def _best_dense(meas: pd.DataFrame) -> dict[Any, float]:
    """(machine, layer configuration) -> median time of the best dense op measured for it."""
    rows = meas[(meas["bench"] == "layer") & (meas["metric"] == "time")]
    items = [(m, k, None if _opt(e) else _opt(v))
             for m, k, v, e in zip(rows["machine"], rows["key"], rows["value"], rows["error"])
             if isinstance(k, LayerKey)]
    best = best_dense(items, lambda it: (it[0], _layer_group(it[1])), lambda it: it[1].op, lambda it: it[2])
    return {g: float(it[2]) for g, it in best.items() if it[2] is not None}


def _drift_check(pairs: pd.DataFrame, status: pd.Series, change: pd.Series, note: pd.Series,
                 base: pd.DataFrame, new: pd.DataFrame, rules: Rules) -> None:
    """Un-flag WCC / QuantConv2d layer rows whose ratio to the best dense op did not move (in place)."""
    dense_base, dense_new = _best_dense(base), _best_dense(new)
    for idx in status.index[status.isin(["regressed", "improved"]) & (pairs["bench"] == "layer")
                            & pairs["error_new"].isna()
                            & pairs["error_base"].isna()]:
        key = pairs.at[idx, "key"]
        if not isinstance(key, LayerKey) or key.op not in _CHECKED_OPS:
            continue
        group = (pairs.at[idx, "machine"], _layer_group(key))
        db, dn = dense_base.get(group), dense_new.get(group)
        if db is None or dn is None or not change[idx] == change[idx]:
            continue
        dense_change = dn / db
        relative = change[idx] / dense_change
        moved = relative > rules.factor if status[idx] == "regressed" else relative < 1 / rules.factor
        if moved:
            note[idx] = (note[idx] + "; " if note[idx] else "") + f"x{relative:.2f} relative to the best dense op"
        else:
            status[idx] = "unchanged"
            note[idx] = (f"x{change[idx]:.2f} here, x{dense_change:.2f} for the best dense op in the same runs: "
                         f"machine drift (x{relative:.2f} relative to it)")


def compare(base: pd.DataFrame, new: pd.DataFrame, rules: Rules | None = None,
            order: list[str] | None = None) -> pd.DataFrame:
    """Pair ``new`` measurements with ``base`` ones (same machine, bench, key and metric; the
    latest of each side) and classify each pair. Columns: :data:`COMPARE_COLUMNS`; ``change``
    is new/base for timing and memory, new - base for accuracy."""
    rules = rules or Rules()
    b, n = _with_rounds(_latest(base, order)), _with_rounds(_latest(new, order))
    pairs = n.merge(b, on=_ID, suffixes=("_new", "_base"), how="inner")
    if not len(pairs):
        return pd.DataFrame(columns=COMPARE_COLUMNS)
    vb = pd.to_numeric(pairs["value_base"], errors="coerce")
    vn = pd.to_numeric(pairs["value_new"], errors="coerce")
    status = pd.Series("unchanged", index=pairs.index, dtype=object)
    change = pd.Series(np.nan, index=pairs.index)
    band = pd.Series(np.nan, index=pairs.index)
    note = pd.Series("", index=pairs.index, dtype=object)
    verdicts = _round_verdicts(pairs, rules)
    for idx, row in zip(pairs.index, pairs.to_dict("records")):
        for k in ("value_base", "value_new", "error_base", "error_new", "session_base", "session_new"):
            row[k] = _opt(row[k])
        row["_verdict"] = verdicts.get(idx)
        s, c, w, why = _RULES[row["rule_new"]](row, rules)
        status[idx], change[idx], note[idx] = s, np.nan if c is None else c, why
        band[idx] = np.nan if w is None else w
    if rules.drift_check:
        _drift_check(pairs, status, change, note, b, n, rules)
    out = pd.DataFrame({
        "machine": pairs["machine"], "bench": pairs["bench"], "label": pairs["label_new"], "metric": pairs["metric"],
        "rule": pairs["rule_new"], "base_version": pairs["version_base"], "new_version": pairs["version_new"],
        "base": vb, "new": vn, "change": change, "band": band, "status": status, "note": note,
        "key": pairs["key"],
    })
    return out.sort_values(["status", "machine", "bench", "label", "metric"], kind="stable").reset_index(drop=True)


def _with_rounds(meas: pd.DataFrame) -> pd.DataFrame:
    """``meas`` with ``rounds`` (a value without rounds is one round) and ``session`` columns."""
    meas = meas.copy()
    if "rounds" not in meas:
        meas["rounds"] = None
    meas["rounds"] = [r if isinstance(r, list) else None if _opt(v) is None else [float(v)]
                      for r, v in zip(meas["rounds"], meas["value"])]
    if "session" not in meas:
        meas["session"] = None
    return meas


def _round_verdicts(pairs: pd.DataFrame, rules: Rules) -> dict[Any, Any]:
    """Per timing pair (index of ``pairs``): its round verdict. A machine's timing rows are one
    family (:func:`bench.report.verdict.judge`: one step-up, a prior per kind of row); WCC and
    QuantConv2d layer rows are judged relative to the dense layer rows timed in the same rounds
    (same device and thread count), the dense rows themselves raw."""
    from bench.report.verdict import judge

    timed = pairs[(pairs["rule_new"] == "timing") & pairs["error_base"].isna() & pairs["error_new"].isna()]
    out: dict[Any, Any] = {}
    for machine, grp in timed.groupby("machine", sort=False):
        rows = [(idx, key, rb or [], rn or [], _opt(sb), _opt(sn)) for idx, key, rb, rn, sb, sn
                in zip(grp.index, grp["key"], grp["rounds_base"], grp["rounds_new"], grp["session_base"],
                       grp["session_new"])]
        rows = [r for r in rows if _positive(r[2]) and _positive(r[3])]
        layer = [isinstance(r[1], LayerKey) for r in rows]
        verdicts = judge(
            [(r[2], r[3]) for r in rows], factor=rules.factor, alpha=rules.alpha,
            same_session=[r[4] is not None and r[4] == r[5] for r in rows],
            run_to_run_sd=[_calibrated_sd(rules, str(machine), r[1]) for r in rows],
            reference=[not (is_layer and r[1].op in _CHECKED_OPS) for r, is_layer in zip(rows, layer)],
            groups=[(r[1].device, r[1].threads) if is_layer else "other" for r, is_layer in zip(rows, layer)])
        out.update({r[0]: v for r, v in zip(rows, verdicts)})
    return out


def _calibrated_sd(rules: Rules, machine: str, key: Any) -> float | None:
    """The machine's run-to-run sd where it was calibrated for ``key``'s setting (its ``source``
    and thread count), else None: noise between runs measured under one setting says little
    about another (one thread in CPU time against two threads on the wall clock)."""
    sd = rules.run_to_run_sd.get(machine)
    setting = rules.calibrated_setting.get(machine)
    if sd is None or setting is None:
        return sd
    return sd if (getattr(key, "source", None), getattr(key, "threads", None)) == tuple(setting) else None


def unmatched(base: pd.DataFrame, new: pd.DataFrame) -> tuple[int, int]:
    """(measurements only in ``base``, only in ``new``) after taking the latest of each side."""
    b = set(map(tuple, _latest(base)[_ID].itertuples(index=False)))
    n = set(map(tuple, _latest(new)[_ID].itertuples(index=False)))
    return len(b - n), len(n - b)


def history(meas: pd.DataFrame, order: list[str], rules: Rules | None = None) -> pd.DataFrame:
    """Each version against the latest earlier version that measured the same thing on the same
    machine (so a machine that skipped a version is compared with its own previous run).
    Columns: :data:`COMPARE_COLUMNS`; ``new_version`` is the version the row belongs to."""
    rules = rules or Rules()
    frames = []
    earlier: pd.DataFrame | None = None
    for version in order:
        current = _latest(meas[meas["version"] == version])
        if earlier is not None and len(current):
            frames.append(compare(earlier, current, rules))
        earlier = current if earlier is None else _latest(pd.concat([earlier, current]), order)
    if not frames:
        return pd.DataFrame(columns=COMPARE_COLUMNS)
    return pd.concat(frames, ignore_index=True)


def family(bench: str, key: Any, label: str) -> str:
    """The configuration a measurement belongs to, minus shape, levels and direction (layer) -
    so that one cause hitting many rows reads as one line: ``wcc[cpu k=0.25] float32 (cpu)``."""
    if bench == "layer" and isinstance(key, LayerKey):
        name = f"wcc[{key.backend} k={key.keep_ratio}]" if key.op == "wcc" else key.op
        return f"{name} {key.dtype} ({key.device})"
    if bench == "model" and isinstance(key, ModelKey):
        return (f"{key.model} {key.variant}" + (f" [{key.backend}]" if key.backend is not None else "")
                + f" {key.dtype} ({key.device})")
    if bench == "pytest-benchmark":
        return label.split("[")[0]
    return label


def group_summary(df: pd.DataFrame) -> pd.DataFrame:
    """Comparison rows (one status, usually "regressed") grouped by machine, bench, metric and
    :func:`family`: the number of rows and the smallest / median / largest change."""
    cols = ["machine", "bench", "family", "metric", "rule", "rows", "min", "median", "max"]
    if not len(df):
        return pd.DataFrame(columns=cols)
    fam = [family(b, k, lb) for b, k, lb in zip(df["bench"], df["key"], df["label"])]
    g = df.assign(family=fam).groupby(["machine", "bench", "family", "metric", "rule"], sort=True)["change"]
    out = g.agg(rows="size", min="min", median="median", max="max").reset_index()
    return out.sort_values(["machine", "rows"], ascending=[True, False], kind="stable")[cols]
