"""The pandas tables of a report (rendered to HTML) and the data behind each section.

Functions here take frames of :mod:`bench.report.load` and return HTML strings (pandas
``Styler`` / ``to_html``, escaped) or plain values for the templates; nothing here writes files.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from bench.report.format import mib, num, short_machine_names
from bench.report.plots import HEADLINE_METRIC, short_set
from bench.rows import LayerKey, ModelKey
from bench.tables.paper import CITYSCAPES, KITTI, TABLE_METRICS

__all__ = ["latest_tables", "accuracy_table", "table_start", "latest_layer", "latest_model", "layer_history",
           "model_history", "speed_summary", "error_summary", "model_table", "pbench_table", "headline", "geomean"]

_PAPER_ORDER = {"cityscapes": [(r.precision, r.shrinkage) for r in CITYSCAPES],
                "kitti": [(r.precision, r.shrinkage) for r in KITTI]}
_METRIC_LABEL = {"miou": ("mIoU", True), "abs_rel": ("AbsRel", False), "rmse": ("RMSE", False)}
# One row per machine and measurement identity (bench.rows): the newest wins.
_LAYER_KEY = ["machine", *LayerKey._fields]
_MODEL_KEY = ["machine", *ModelKey._fields]
_GOOD, _BAD = "color:#1e7b34;font-weight:600", "color:#b3261e;font-weight:600"


def _html(df: pd.DataFrame, uid: str, text: list[str], fmt: dict[str, str] | None = None,
          wrap: tuple[str, ...] = ("error",)) -> str:
    """A pandas Styler table: escaped, no index, ``text`` columns (cells and headers)
    left-aligned, cells on one line except the ``wrap`` columns."""
    nowrap = [c for c in df.columns if c not in wrap]
    styler = (df.style.format(fmt or {}, na_rep="-").format(escape="html", subset=text)
              .set_properties(subset=text, **{"text-align": "left"})
              .set_properties(subset=nowrap, **{"white-space": "nowrap"})
              .set_table_styles({c: [{"selector": "th", "props": "text-align: left"}] for c in text}, overwrite=False)
              .hide(axis="index").set_table_attributes('class="data"').set_uuid(uid))
    return styler.to_html()


def geomean(values: Any) -> float:
    v = np.asarray(pd.to_numeric(pd.Series(values), errors="coerce"), dtype=float)
    v = v[np.isfinite(v) & (v > 0)]
    return float(np.exp(np.log(v).mean())) if len(v) else float("nan")


def _dedupe(df: pd.DataFrame, key: list[str]) -> pd.DataFrame:
    """The newest row per ``key`` (``NaN`` keys compare equal)."""
    if not len(df):
        return df
    return df.sort_values("created", kind="stable").drop_duplicates(key, keep="last")


# ----------------------------------------------------------------------------- accuracy


def latest_tables(tables: pd.DataFrame, per_version: bool = False) -> pd.DataFrame:
    """Newest record per (table, profile, data, machine, row) - and per version with
    ``per_version`` - in the paper's row order."""
    df = _dedupe(tables, ["version"] * per_version + ["table", "profile", "data", "machine", "row_id"])
    if not len(df):
        return df
    pos = [(_PAPER_ORDER[t].index((p, s)) if (p, s) in _PAPER_ORDER[t] else 99)
           for t, p, s in zip(df["table"], df["precision"], df["shrinkage"])]
    return df.assign(_pos=pos).sort_values(["table", "profile", "data", "machine", "_pos"]).drop(columns="_pos")


def accuracy_table(group: pd.DataFrame, uid: str) -> str:
    """Published vs measured for one (table, profile, data, machine) group, deltas coloured
    (green: measured better than published, red: worse)."""
    table = group["table"].iloc[0]
    metrics = TABLE_METRICS[table]
    cols: dict[str, list[Any]] = {"precision": list(group["precision"]), "shrinkage": list(group["shrinkage"]),
                                  "BOPs (B) published": list(group["bops_paper"]),
                                  "BOPs (B) measured": list(group["bops"])}
    better_when = {}
    for m in metrics:
        label, higher = _METRIC_LABEL[m]
        pub = [mp.get(m) for mp in group["metrics_paper"]]
        got = [mm.get(m) for mm in group["metrics"]]
        cols[f"{label} published"] = pub
        cols[f"{label} measured"] = got
        cols[f"Δ {label}"] = [None if a is None or b is None else b - a for a, b in zip(pub, got)]
        better_when[f"Δ {label}"] = higher
        # Each row against its own table's FP32 row, beside the paper's row against the paper's
        # FP32 row: unlike the raw deltas, this compares like with like on a stand-in data set.
        fp32 = [i for i, p in enumerate(group["precision"]) if p == "FP32"]
        for name, values in ((f"{label} drop vs FP32 published", pub), (f"{label} drop vs FP32 measured", got)):
            ref = values[fp32[0]] if fp32 else None
            cols[name] = [None if ref is None or v is None else v - ref for v in values]
            better_when[name] = higher
    df = pd.DataFrame(cols).astype({c: float for c in cols if c not in ("precision", "shrinkage")})

    def colour(frame: pd.DataFrame) -> pd.DataFrame:
        css = pd.DataFrame("", index=frame.index, columns=frame.columns)
        for col, higher in better_when.items():
            d = frame[col]
            good = d > 0 if higher else d < 0
            css.loc[good & d.notna() & (d != 0), col] = _GOOD
            css.loc[~good & d.notna() & (d != 0), col] = _BAD
        return css

    fmt = {c: "{:,.1f}" for c in cols if c.startswith("BOPs")}
    fmt.update({c: "{:.3f}" for c in cols if c not in fmt and c not in ("precision", "shrinkage")})
    fmt.update({c: "{:+.3f}" for c in better_when})
    text = ["precision", "shrinkage"]
    styler = (df.style.apply(colour, axis=None).format(fmt, na_rep="-").format(escape="html", subset=text)
              .set_properties(subset=text, **{"text-align": "left"})
              .hide(axis="index").set_table_attributes('class="data"').set_uuid(uid))
    return styler.to_html()


def table_start(group: pd.DataFrame) -> str:
    """Where one (table, profile, data, machine) group's rows started, in words: the FP32
    checkpoint they descend from or the ImageNet backbone its training began with (file and
    the head of its sha256), else training from random initialization."""
    def ref(value: Any) -> dict[str, Any] | None:
        return value if isinstance(value, dict) and "path" in value else None

    inits = {(r["path"], r["sha256"]) for r in map(ref, group.get("init_checkpoint", [])) if r}
    backbones = {(r["path"], r["sha256"]) for r in map(ref, group.get("pretrained_backbone", [])) if r}
    parts = [f"FP32 = checkpoint {p} (sha256 {h[:12]}), evaluated as it is" for p, h in sorted(inits)]
    parts += [f"FP32 trained from ImageNet backbone {p} (sha256 {h[:12]})" for p, h in sorted(backbones)]
    procedures = {p for p in group.get("procedure", []) if isinstance(p, str)}
    if procedures & {"evaluated", "post-training"}:
        parts.append("bench evaluate: " + " and ".join(sorted(procedures)) + " rows, no fine-tuning")
    return "; ".join(parts) if parts else "FP32 trained from random initialization"


# ----------------------------------------------------------------------------- timing


def latest_layer(layer: pd.DataFrame) -> pd.DataFrame:
    return _dedupe(layer, _LAYER_KEY)


def latest_model(model: pd.DataFrame) -> pd.DataFrame:
    return _dedupe(model, _MODEL_KEY)


def layer_history(layer: pd.DataFrame) -> pd.DataFrame:
    """Per (machine, version, backend, keep ratio, dtype, device): the geometric mean over the
    shapes of the forward WCC / dense ratio at the machine's deepest level count (newest record
    per configuration and version). Computed once for the whole history."""
    cols = ["machine", "version", "backend", "keep_ratio", "dtype", "device", "levels", "ratio"]
    wcc = layer[(layer["source"] == "timing") & (layer["op"] == "wcc") & layer["error"].isna()
                & (layer["direction"] == "fwd") & layer["ratio_to_dense"].notna()] if len(layer) else layer
    if not len(wcc):
        return pd.DataFrame(columns=cols)
    wcc = _dedupe(wcc, ["version", *_LAYER_KEY])
    deepest = wcc.groupby("machine")["levels"].transform("max")
    wcc = wcc[wcc["levels"] == deepest].assign(logr=np.log(wcc["ratio_to_dense"].astype(float)))
    g = wcc.groupby(["machine", "version", "backend", "keep_ratio", "dtype", "device", "levels"], sort=False)["logr"]
    return np.exp(g.mean()).rename("ratio").reset_index()[cols]


def model_history(model: pd.DataFrame) -> pd.DataFrame:
    """Newest successful model row per (version, configuration): what the history plots draw."""
    ok = model[model["error"].isna() & model["median_s"].notna()] if len(model) else model
    return _dedupe(ok, ["version", *_MODEL_KEY]) if len(ok) else ok


def best_ratio_column(frame: pd.DataFrame) -> str:
    """``ratio_to_best_runtime`` (over every dense baseline, deployed runtimes included) where
    the rows have it, else ``ratio_to_dense`` (records from before the runtime baselines)."""
    if "ratio_to_best_runtime" in frame and frame["ratio_to_best_runtime"].notna().any():
        return "ratio_to_best_runtime"
    return "ratio_to_dense"


_RUNTIME_NAMES = {"dense_nchw": "eager NCHW", "dense_cl": "eager channels-last", "matmul": "eager matmul",
                  "ort_fp32": "ORT FP32", "ort_int8": "ORT int8", "inductor_fp32": "torch.compile",
                  "openvino_fp32": "OpenVINO FP32", "openvino_int8": "OpenVINO int8", "tensorrt_fp16": "TensorRT FP16",
                  "tensorrt_int8": "TensorRT int8"}
_INT8_BASELINES = ("ort_int8", "openvino_int8", "tensorrt_int8")


def deployed_table(layer: pd.DataFrame, uid: str) -> str:
    """Per forward shape: WCC k=0.25 (best backend, deepest J), every dense baseline that ran
    (eager and deployed runtimes) in ms, WCC / fastest baseline, and the floors of the WCC row and
    of the fastest baseline. One machine, device and dtype; "" without runtime rows."""
    fwd = layer[(layer["direction"] == "fwd") & layer["error"].isna() & layer["median_s"].notna()]
    deployed = [op for op in _RUNTIME_NAMES if op not in ("dense_nchw", "dense_cl", "matmul")]
    if "floor_s" not in fwd or not fwd["op"].isin(deployed).any():
        return ""
    rows = []
    for (shape_set, shape), grp in fwd.groupby(["shape_set", "shape_label"], sort=False):
        wcc = grp[(grp["op"] == "wcc") & (grp["keep_ratio"] == 0.25)]
        if len(wcc):
            wcc = wcc[wcc["levels"] == wcc["levels"].max()]
        line: dict[str, Any] = {"shape set": short_set(shape_set), "shape": shape}
        best_wcc = wcc.loc[wcc["median_s"].astype(float).idxmin()] if len(wcc) else None
        line["WCC 25% ms"] = best_wcc["median_s"] * 1e3 if best_wcc is not None else np.nan
        line["WCC floor ms"] = best_wcc["floor_s"] * 1e3 if best_wcc is not None else np.nan
        base = grp[grp["op"].isin(list(_RUNTIME_NAMES))]
        for op, name in _RUNTIME_NAMES.items():
            hit = base[base["op"] == op]
            if len(hit):
                line[f"{name} ms"] = float(hit["median_s"].iloc[0]) * 1e3
        fastest = base.loc[base["median_s"].astype(float).idxmin()] if len(base) else None
        line["best dense"] = _RUNTIME_NAMES.get(fastest["op"], fastest["op"]) if fastest is not None else "-"
        line["dense floor ms"] = fastest["floor_s"] * 1e3 if fastest is not None else np.nan
        line["WCC / best dense"] = (line["WCC 25% ms"] / (fastest["median_s"] * 1e3)
                                    if fastest is not None else np.nan)
        rows.append(line)
    df = pd.DataFrame(rows)
    num_cols = [c for c in df.columns if c not in ("shape set", "shape", "best dense")]
    first = ["shape set", "shape", "WCC / best dense", "best dense", "WCC 25% ms", "WCC floor ms", "dense floor ms"]
    df = df[[*first, *[c for c in df.columns if c not in first]]]
    return _html(df, uid, ["shape set", "shape", "best dense"],
                 {c: ("{:.2f}" if c == "WCC / best dense" else "{:,.4g}") for c in num_cols})


def int8_verdict(layer: pd.DataFrame, model: pd.DataFrame | None = None) -> str:
    """One plain sentence: is WCC (keep 0.25, best backend, deepest J) faster than int8 dense
    (the deployed int8 runtimes) on this machine, per layer shape and for the model."""
    parts = []
    fwd = layer[(layer["direction"] == "fwd") & layer["error"].isna() & layer["median_s"].notna()]
    int8 = fwd[fwd["op"].isin(_INT8_BASELINES)]
    if len(int8):
        wins, total, ratios = 0, 0, []
        for _, grp in fwd.groupby(["shape_set", "shape_label"], sort=False):
            w = grp[(grp["op"] == "wcc") & (grp["keep_ratio"] == 0.25)]
            d = grp[grp["op"].isin(_INT8_BASELINES)]
            if len(w) and len(d):
                w = w[w["levels"] == w["levels"].max()]
                r = float(w["median_s"].min()) / float(d["median_s"].min())
                ratios.append(r)
                total += 1
                wins += r < 1
        if total:
            verdict = ("faster than" if wins == total else "slower than" if wins == 0
                       else "not consistently faster than")
            parts.append(f"Per layer, WCC 25% is {verdict} int8 dense on this machine: faster on {wins} of {total} "
                         f"shapes (WCC / fastest int8 runtime: {', '.join(f'{r:.2f}' for r in ratios)}).")
    else:
        parts.append("No int8 dense runtime ran on this machine, so WCC is not compared with int8 dense here.")
    if model is not None and len(model) and "runtime_op" in model:
        ok = model[model["error"].isna() & model["median_s"].notna()]
        w = ok[ok["variant"] == "WCC 25%"]
        d = ok[ok["runtime_op"].isin(_INT8_BASELINES)]
        if len(w) and len(d):
            r = float(w["median_s"].min()) / float(d["median_s"].min())
            parts.append(f"End to end, WCC 25% is {'faster' if r < 1 else 'slower'} than the int8 dense model "
                         f"({r:.2f}x its latency).")
    return " ".join(parts)


def speed_summary(layer: pd.DataFrame, uid: str, ratio: str = "ratio_to_dense") -> str:
    """Geometric-mean WCC / dense ratio per shape set and direction (rows) and backend x keep
    ratio (columns) at the deepest J; one machine, device and dtype. ``ratio``: the column
    (``ratio_to_dense``: best eager op; ``ratio_to_best_runtime``: best dense baseline)."""
    if ratio not in layer:
        return ""
    wcc = layer[(layer["op"] == "wcc") & layer["error"].isna() & layer[ratio].notna()]
    if not len(wcc):
        return ""
    wcc = wcc[wcc["levels"] == wcc["levels"].max()]
    t = (wcc.assign(shape_set=wcc["shape_set"].map(short_set),
                    op=wcc["backend"] + " k=" + wcc["keep_ratio"].map(lambda k: f"{k:g}"))
         .groupby(["shape_set", "direction", "op"])[ratio].apply(geomean).unstack("op"))
    t.columns.name = None
    t = t.reset_index().rename(columns={"shape_set": "shape set"})
    return _html(t, uid, ["shape set", "direction"], {c: "{:.2f}" for c in t.columns[2:]})


def error_summary(layer: pd.DataFrame) -> list[tuple[str, int, str]]:
    """(op[backend], rows that could not run, first reason) for one machine's rows."""
    err = layer[layer["error"].notna()]
    out = []
    for (op, backend), grp in err.groupby([err["op"], err["backend"].fillna("-")], sort=True):
        out.append((f"{op}[{backend}]", len(grp), str(grp["error"].iloc[0])[:200]))
    return out


def model_table(model: pd.DataFrame, machines: dict[str, str], uid: str = "model") -> str:
    if not len(model):
        return ""
    df = pd.DataFrame({
        "machine": [short_machine_names(machines).get(m, m) for m in model["machine"]], "model": model["model"],
        "input": model["input"],
        "dtype": model["dtype"], "device": model["device"], "variant": model["variant"],
        "backend": model["backend"].fillna("-"),
        "median ms": model["median_s"].astype(float) * 1e3, "IQR ms": model["iqr_s"].astype(float) * 1e3,
        "x best dense": _col(model, "ratio_to_best_runtime"),
        "floor ms": _col(model, "floor_s") * 1e3,
        "x dense (eager)": model["ratio_to_dense"].astype(float),
        "precision": model["precision"].fillna("-") if "precision" in model else "-",
        "peak MiB": [mib(v).replace(" MiB", "") for v in model["peak_mem_bytes"]],
        "train saved MiB": [mib(v).replace(" MiB", "") for v in model["train_saved_bytes"]],
        "train peak MiB": [mib(v).replace(" MiB", "") for v in model["train_peak_bytes"]],
        "error": [(e if isinstance(e, str) else me if isinstance(me, str) else "")[:120]
                  for e, me in zip(model["error"], model["memory_error"])],
    })
    if not any(df["error"]):
        df = df.drop(columns="error")
    text = [c for c in ("machine", "model", "input", "dtype", "device", "variant", "backend", "error") if c in df]
    if df["x best dense"].isna().all():  # records from before the runtime baselines
        df = df.drop(columns=["x best dense", "floor ms"])
    text = [*text, "precision"]
    return _html(df, uid, text, {"median ms": "{:,.4g}", "IQR ms": "{:,.4g}", "x best dense": "{:.2f}",
                                 "floor ms": "{:,.4g}", "x dense (eager)": "{:.2f}"})


def _col(frame: pd.DataFrame, name: str) -> pd.Series:
    return frame[name].astype(float) if name in frame else pd.Series(np.nan, index=frame.index)


def pbench_table(pbench: pd.DataFrame, machines: dict[str, str]) -> str:
    """One line per pytest-benchmark record: benchmark count, WCC / dense geometric mean."""
    if not len(pbench):
        return ""
    rows = []
    for (machine, record), grp in pbench.groupby(["machine", "record"], sort=True):
        wcc = grp[grp["op"].astype(str).str.startswith(("wcc", "WCC"))]
        rows.append({"machine": short_machine_names(machines).get(machine, machine), "record": record,
                     "benchmarks": len(grp),
                     "with raw samples": int((grp["n_samples"] > 0).sum()),
                     "WCC / dense (geo. mean)": geomean(wcc["ratio_to_dense"])})
    return _html(pd.DataFrame(rows), "pbench", ["machine", "record"], {"WCC / dense (geo. mean)": "{:.2f}"})


# ----------------------------------------------------------------------------- index


def headline(tables: pd.DataFrame, layer: pd.DataFrame, model: pd.DataFrame,
             machines: dict[str, str]) -> dict[str, Any]:
    """The index page's numbers for one version: WCC 25% accuracy (data source tagged), the
    per-machine WCC k=0.25 / dense layer ratio (best backend) and WCC 25% model latency ratio."""
    out: dict[str, Any] = {}
    t = latest_tables(tables)
    for table in ("cityscapes", "kitti"):
        metric, label = HEADLINE_METRIC[table]
        # Smoke runs exercise the pipeline; their numbers mean nothing, so they never headline.
        rows = t[(t["table"] == table) & (t["shrinkage"] == "25%") & (t["profile"] != "smoke")].sort_values("created")
        if len(rows):
            r = rows.iloc[-1]
            value = r["metrics"].get(metric)
            out[table] = {"label": label.split(" ")[0], "value": num(value, 3), "synthetic": bool(r["synthetic"]),
                          "data": r["data"], "paper": num(r["metrics_paper"].get(metric), 3)}
    speed = []
    lay = latest_layer(layer)
    wcc = lay[(lay["op"] == "wcc") & lay["error"].isna() & (lay["keep_ratio"] == 0.25) & (lay["direction"] == "fwd")]
    for machine, grp in wcc.groupby("machine", sort=True):
        grp = grp[grp["levels"] == grp["levels"].max()]
        col = best_ratio_column(grp)
        per_backend = grp.groupby(["backend", "device", "dtype"])[col].apply(geomean)
        if len(per_backend) and not math.isnan(per_backend.min()):
            (backend, device, dtype), best = per_backend.idxmin(), per_backend.min()
            note = "" if col == "ratio_to_best_runtime" else " (eager dense only)"
            speed.append((machines.get(machine, machine), f"x{best:.2f} [{backend}] {device} {dtype}{note}"))
    out["layer"] = speed
    mod = latest_model(model)
    wm = mod[(mod["variant"] == "WCC 25%") & mod["error"].isna() & mod["ratio_to_dense"].notna()]
    out["model"] = []
    for m, g in wm.groupby("machine", sort=True):
        col = best_ratio_column(g)
        best = g.loc[g[col].astype(float).idxmin()]
        note = f" vs {best['best_runtime']}" if col == "ratio_to_best_runtime" else " (eager dense only)"
        out["model"].append((machines.get(m, m), f"x{best[col]:.2f} [{best['backend']}] "
                                                  f"{best['device']} {best['dtype']}{note}"))
    return out
