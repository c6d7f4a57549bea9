"""The report's figures (matplotlib, Agg backend, seaborn styling), written as PNG files.

Each function takes the frames of :mod:`bench.report.load` (already restricted to what the
figure shows), writes one PNG and returns its path, or ``None`` when there is nothing to draw.

Rendering is most of a report's build time, and text is most of rendering, so: layouts are
computed in inches (:class:`_Layout`: no tight-bbox pass, which draws everything twice), titles
sit at a fixed height (no automatic title placement), log axes use plain number labels (no
mathtext), heatmap cells are annotated only when there are few, and PNGs use fast compression.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display, no GUI toolkit

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from bench.tables.paper import CITYSCAPES, KITTI  # noqa: E402
from wcc.accounting import equivalent_bits  # noqa: E402

__all__ = ["REPRESENTATIVE_CHANNELS", "equivalent_bits_of", "accuracy_vs_bits", "speed_heatmap", "model_plot",
           "accuracy_history", "timing_history", "short_set", "TABLE_TITLES", "HEADLINE_METRIC"]

DPI = 80
#: C in the WCC equivalent-bits formula keep * act_bits + 1/C. The bit-map term is per layer;
#: 256 is the width of DeepLabV3+'s ASPP and decoder 1x1 convs. Any C >= 24 (the narrowest
#: MobileNetV2 1x1 input in these models) moves a point by < 0.05 bits, invisible on the plot.
REPRESENTATIVE_CHANNELS = 256
FP_BITS = 32
TABLE_TITLES = {"cityscapes": "Segmentation (DeepLabV3+ MobileNetV2)", "kitti": "Depth (MobileNetV2 depth net)"}
HEADLINE_METRIC = {"cityscapes": ("miou", "mIoU (higher is better)"), "kitti": ("abs_rel", "AbsRel (lower is better)")}
_PUBLISHED = {"cityscapes": (CITYSCAPES, "Cityscapes val"), "kitti": (KITTI, "KITTI Eigen")}
_VARIANT_ORDER = ["FP32", "FP16", "BF16", "8/8", "WCC 50%", "WCC 25%", "WCC 12.5%"]
_RATIO_TICKS = [2.0 ** e for e in range(-8, 9)]

sns.set_theme(style="whitegrid", context="paper", font_scale=0.95)
_CHAR_IN = 0.056  # width of one 7-pt legend character, inches (DejaVu Sans, average)
_LINE_IN = 0.155  # height of one 7-pt legend line, inches


class _Layout:
    """Axes placed on a grid with margins in inches: ``left`` / ``right`` / ``top`` / ``bottom``
    around the whole grid, ``hgap`` / ``vgap`` between panels, panels ``panel_w`` x ``panel_h``
    (``panel_h`` may be a list, one height per row)."""

    def __init__(self, rows: int, cols: int, panel_w: float, panel_h: float | list[float], left: float = 0.8,
                 right: float = 0.2, top: float = 0.35, bottom: float = 0.55, hgap: float = 0.8,
                 vgap: float = 0.45) -> None:
        heights = panel_h if isinstance(panel_h, list) else [panel_h] * rows
        self.width = left + cols * panel_w + (cols - 1) * hgap + right
        self.height = top + sum(heights) + (rows - 1) * vgap + bottom
        self.fig = plt.figure(figsize=(self.width, self.height))
        self.axes = []
        y = self.height - top
        for r in range(rows):
            y -= heights[r]
            row = []
            for c in range(cols):
                x = left + c * (panel_w + hgap)
                row.append(self.fig.add_axes((x / self.width, y / self.height, panel_w / self.width,
                                              heights[r] / self.height)))
            self.axes.append(row)
            y -= vgap

    def save(self, path: Path) -> Path:
        return _save(self.fig, path)


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Fast zlib level: PNG compression was a third of the rendering time at the default level.
    fig.savefig(path, dpi=DPI, pil_kwargs={"compress_level": 1})
    plt.close(fig)
    return path


def _title(ax: Any, text: str, size: float = 9) -> None:
    # A fixed y turns off matplotlib's automatic title placement (a costly layout pass).
    ax.set_title(text, fontsize=size, loc="left", y=1.0, pad=4)


def _plain_log(ax: Any, axis: str = "y", base: float = 10) -> None:
    """A log axis labelled with plain numbers (no mathtext to lay out)."""
    getattr(ax, f"set_{axis}scale")("log", base=base)
    target = ax.yaxis if axis == "y" else ax.xaxis
    if base == 10:  # 1-2-5 steps: a range inside one decade still gets labelled ticks
        target.set_major_locator(matplotlib.ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    target.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    target.set_minor_formatter(matplotlib.ticker.NullFormatter())


def _legend_lines(labels: list[str]) -> int:
    return sum(t.count("\n") + 1 for t in labels)


def short_set(name: str) -> str:
    """``"deeplabv3plus-mobilenetv2@1024x2048"`` -> ``"deeplabv3plus"``."""
    return name.split("@")[0].split("-")[0]


def _parse_bits(precision: str) -> tuple[int | None, int | None]:
    if "/" not in precision:
        return None, None
    w, a = precision.split("/")
    return int(w), int(a)


def _parse_keep(shrinkage: str) -> float | None:
    return float(shrinkage.rstrip("%")) / 100 if shrinkage.endswith("%") else None


def equivalent_bits_of(precision: str, shrinkage: str, channels: int = REPRESENTATIVE_CHANNELS) -> float:
    """Bits per activation element of a table row: ``act_bits`` for plain rows (32 for FP32),
    ``keep * act_bits + 1/C`` for WCC rows (:func:`wcc.accounting.equivalent_bits`)."""
    _, act = _parse_bits(precision)
    keep = _parse_keep(shrinkage)
    if act is None:
        return float(FP_BITS)
    return equivalent_bits(keep, act, channels) if keep is not None else float(act)


def _series(points: list[tuple[str, str, float | None]]) -> tuple[list[float], list[float], list[float], list[float]]:
    """Split (precision, shrinkage, value) points into (plain x, plain y, wcc x, wcc y)."""
    px: list[float] = []
    py: list[float] = []
    wx: list[float] = []
    wy: list[float] = []
    for precision, shrinkage, value in points:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        x = equivalent_bits_of(precision, shrinkage)
        (wx if _parse_keep(shrinkage) is not None else px).append(x)
        (wy if _parse_keep(shrinkage) is not None else py).append(value)
    return px, py, wx, wy


def accuracy_vs_bits(tables: pd.DataFrame, path: Path) -> Path:
    """Headline metric vs equivalent bits per activation, WCC vs plain quantization; published
    points (open markers) and measured ones (filled), the data source in every legend entry.
    ``tables``: one row per (group, row id) to show; published points are drawn even when
    nothing was measured."""
    palette = sns.color_palette("deep")
    panels = []
    for table in ("cityscapes", "kitti"):
        metric, _ = HEADLINE_METRIC[table]
        rows, source = _PUBLISHED[table]
        # (marker format, marker face or None for the line colour, line colour, legend text)
        lines: list[tuple[str, str | None, Any, str]] = [
                 ("o--", "white", palette[0], f"published, plain quant. ({source})"),
                 ("s--", "white", palette[1], f"published, WCC ({source})")]
        points = [_series([(r.precision, r.shrinkage, r.metrics.get(metric)) for r in rows])]
        sub = tables[tables["table"] == table]
        for i, ((data, profile), grp) in enumerate(sub.groupby(["data", "profile"], sort=True)):
            tag = f"{data}; profile {profile}"
            lines += [("o-", None, palette[(2 + 2 * i) % 10], f"measured, plain quant. ({tag})"),
                      ("s-", None, palette[(3 + 2 * i) % 10], f"measured, WCC ({tag})")]
            points.append(_series([(r.precision, r.shrinkage, r.metrics.get(metric)) for r in grp.itertuples()]))
        panels.append((table, lines, points))
    labels = [[textwrap.fill(t, 62, subsequent_indent="  ") for *_, t in lines] for _, lines, _ in panels]
    legend_h = max(_legend_lines(lb) for lb in labels) * _LINE_IN + 0.15
    lay = _Layout(1, 2, 4.3, 2.9, left=0.75, right=0.3, top=0.35, bottom=0.6 + legend_h, hgap=1.0)
    for ax, (table, lines, points), texts in zip(lay.axes[0], panels, labels):
        for k, (fmt, face, colour, _) in enumerate(lines):
            xs, ys = points[k // 2][2 * (k % 2)], points[k // 2][2 * (k % 2) + 1]
            face_style: dict[str, Any] = {"mfc": face} if face else {}
            ax.plot(xs, ys, fmt, color=colour, label=texts[k], **face_style)
        ax.set_xscale("log", base=2)
        ax.set_xticks([1, 2, 4, 6, 8, 32], ["1", "2", "4", "6", "8", "32"])
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel(f"equivalent bits per activation (WCC: keep x bits + 1/{REPRESENTATIVE_CHANNELS})", fontsize=8)
        ax.set_ylabel(HEADLINE_METRIC[table][1], fontsize=8)
        _title(ax, TABLE_TITLES[table], 10)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(0.0, -0.55 / 2.9 - 0.05), frameon=False,
                  borderaxespad=0)
    return lay.save(path)


def _fraction(t: float) -> str:
    return f"{t:g}" if t >= 1 else f"1/{1 / t:g}"


def speed_heatmap(layer: pd.DataFrame, path: Path, title: str) -> Path | None:
    """WCC / best dense median-time ratio per shape (rows, grouped by shape set) and direction x
    op (columns: QuantConv2d, then each backend x keep ratio); colour on a log scale centred on
    1 (green: faster than dense), grey: could not run. ``layer``: one machine, device and dtype;
    the deepest level count is shown.

    Drawn with ``imshow`` on a layout computed in inches (no tight-bbox pass) and with short
    labels: text is what costs time in a full grid of over a hundred rows."""
    ok = layer[layer["error"].isna() & layer["ratio_to_dense"].notna()]
    wcc = ok[ok["op"] == "wcc"]
    if not len(wcc):
        return None
    levels = int(wcc["levels"].max())
    wcc = wcc[wcc["levels"] == levels]
    q = ok[ok["op"] == "quantconv"]
    both = pd.concat([q.assign(col="quant 8/8"),
                      wcc.assign(col=wcc["backend"] + " k=" + wcc["keep_ratio"].map(lambda k: f"{k:g}"))])
    both["col"] = both["direction"] + ": " + both["col"]
    both["row"] = list(zip(both["shape_set"], both["shape_label"]))
    rows = list(dict.fromkeys(zip(layer["shape_set"], layer["shape_label"])))
    cols = sorted(both["col"].unique(), key=lambda c: (c.split(":")[0] != "fwd", "quant" not in c, c))
    grid = both.pivot_table(index="row", columns="col", values="ratio_to_dense", aggfunc="median", sort=False)
    grid = grid.reindex(index=rows, columns=cols)
    values = grid.to_numpy(dtype=float)
    log = np.log2(values)
    lim = max(1.0, float(np.nanmax(np.abs(log))))
    n_rows, n_cols = values.shape
    # Layout in inches: set names and shape labels left, cells, colour bar right.
    label_w = 0.062 * max(len(r[1]) for r in rows) + 0.45
    cell_w, cell_h = (0.62, 0.26) if n_rows <= 30 else (0.5, 0.17)
    top, bottom, cbar_w = 0.5, 1.15, 1.2
    width, height = label_w + cell_w * n_cols + cbar_w, top + bottom + cell_h * n_rows
    fig = plt.figure(figsize=(width, height))
    ax = fig.add_axes((label_w / width, bottom / height, cell_w * n_cols / width, cell_h * n_rows / height))
    ax.set_facecolor("#d5d8dc")  # cells that could not run
    image = ax.imshow(log, cmap="RdYlGn_r", vmin=-lim, vmax=lim, aspect="auto", interpolation="nearest")
    ax.set_xticks(range(n_cols), cols, rotation=40, ha="right", fontsize=7)
    ax.set_yticks(range(n_rows), [r[1] for r in rows], fontsize=7 if n_rows <= 30 else 6)
    ax.grid(False)
    ax.tick_params(length=0)
    for j in range(1, n_cols):  # white cell borders; a dark line between the directions
        fwdbwd = cols[j].startswith("fwdbwd") and not cols[j - 1].startswith("fwdbwd")
        ax.axvline(j - 0.5, color="0.15" if fwdbwd else "white", lw=1.6 if fwdbwd else 0.5)
    start = 0
    for i in range(1, n_rows + 1):  # a dark line and the set's name between shape sets
        if i == n_rows or rows[i][0] != rows[start][0]:
            if i < n_rows:
                ax.axhline(i - 0.5, color="0.15", lw=1.6)
            ax.text(-0.5 - (label_w - 0.2) / cell_w, (start + i - 1) / 2, short_set(rows[start][0]), rotation=90,
                    ha="center", va="center", fontsize=7, fontweight="bold")
            start = i
    if values.size <= 240:  # numbers in the cells only while they stay legible and cheap
        for (i, j), v in np.ndenumerate(values):
            if np.isfinite(v):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if abs(math.log2(v)) > 0.6 * lim else "black")
    cbar_h = min(3.0, max(1.6, cell_h * n_rows))  # may reach into the bottom margin (the x labels lean left)
    cax = fig.add_axes(((width - cbar_w + 0.25) / width, (bottom + cell_h * n_rows - cbar_h) / height,
                        0.15 / width, cbar_h / height))
    cbar = fig.colorbar(image, cax=cax)
    step = max(1, math.ceil(2 * lim / 6))  # about six colour-bar ticks, at powers of 2
    ticks = [t for t in _RATIO_TICKS if abs(math.log2(t)) <= lim and int(math.log2(t)) % step == 0]
    cbar.set_ticks([math.log2(t) for t in ticks], labels=[_fraction(t) for t in ticks])
    cbar.ax.tick_params(labelsize=7)
    cbar.set_label("median time / best dense", fontsize=8)
    ax.set_title(f"{title} - WCC at J={levels}, 8/8", fontsize=9, y=1.0, pad=6)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, pil_kwargs={"compress_level": 1})
    plt.close(fig)
    return path


def _variant_order(values: Any) -> list[str]:
    present = list(dict.fromkeys(values))
    return [v for v in _VARIANT_ORDER if v in present] + [v for v in present if v not in _VARIANT_ORDER]


def _series_labels(df: pd.DataFrame, columns: list[str]) -> list[str]:
    """One label per row from the columns that actually vary (a single machine is not named)."""
    varying = [c for c in columns if df[c].astype(str).nunique() > 1]
    if not varying:
        varying = columns[-1:]
    return [" ".join(str(v) for v in vals) for vals in zip(*(df[c].astype(str) for c in varying))]


def model_plot(model: pd.DataFrame, machines: dict[str, str], path: Path) -> Path | None:
    """Model latency (median, IQR whiskers) and inference / training memory per variant; one
    bar series per machine / model / input / device / backend (dense and 8/8 rows: "torch")."""
    ok = model[model["error"].isna() & model["median_s"].notna()].copy()
    if not len(ok):
        return None
    ok["backend"] = ["torch" if pd.isna(b) else b for b in ok["backend"]]
    ok["machine"] = [machines.get(m, m).split(" · ")[0] for m in ok["machine"]]
    ok["model"] = ok["model"].map(lambda m: m.split("-")[0])
    ok["series"] = _series_labels(ok, ["machine", "model", "input", "device", "dtype", "backend"])
    order = _variant_order(ok["variant"])
    names = sorted(ok["series"].unique())
    legend_h = math.ceil((len(names) + 1) / 2) * _LINE_IN + 0.1
    lay = _Layout(1, 2, 4.4, 2.6, left=0.8, right=0.2, top=0.35, bottom=0.45 + legend_h, hgap=0.8)
    axes = lay.axes[0]
    palette = dict(zip(names, sns.color_palette("deep", len(names))))
    # Bars of one variant sit side by side, centred on its tick, whichever series have it.
    slots = {v: sorted(ok.loc[ok["variant"] == v, "series"].unique()) for v in order}
    width = 0.8 / max(len(x) for x in slots.values())
    for i, name in enumerate(names):
        grp = ok[ok["series"] == name]
        xs = [order.index(v) + (slots[v].index(name) - (len(slots[v]) - 1) / 2) * width for v in grp["variant"]]
        med, half_iqr = grp["median_s"].to_numpy(float) * 1e3, grp["iqr_s"].fillna(0).to_numpy(float) * 1e3 / 2
        axes[0].bar(xs, med, width=width, color=palette[name], label=name)
        axes[0].vlines(xs, med - half_iqr, med + half_iqr, color="black", lw=0.8)
        axes[1].bar(xs, grp["peak_mem_bytes"].astype(float) / 2**20, width=width, color=palette[name])
        axes[1].hlines(grp["train_saved_bytes"].astype(float) / 2**20, np.subtract(xs, width / 2),
                       np.add(xs, width / 2), color="black", lw=1.6,
                       label="training activations saved" if i == 0 else "_nolegend_")
    latency = ok["median_s"].astype(float)
    if latency.max() > 20 * latency.min():  # CPU and GPU rows together: one linear axis hides the GPU
        _plain_log(axes[0])
    for ax, ylabel in zip(axes, ("median latency, ms (IQR whiskers)", "MiB")):
        ax.set_xticks(range(len(order)), order, fontsize=8)
        ax.set_ylabel(ylabel, fontsize=8)
    _title(axes[0], "Inference latency", 10)
    _title(axes[1], "Peak inference memory (bars), training activations (black lines)", 10)
    # One legend for both panels, below them (two columns of long labels need the full width).
    handles, labels = axes[0].get_legend_handles_labels()
    h2, l2 = axes[1].get_legend_handles_labels()
    lay.fig.legend(handles + h2, labels + l2, fontsize=7, ncol=2, frameon=False, loc="upper left",
                   bbox_to_anchor=(0.8 / lay.width, (legend_h + 0.05) / lay.height), borderaxespad=0)
    return lay.save(path)


def _version_axis(ax: Any, versions: list[str], current: str, labels: bool = True) -> None:
    ax.set_xticks(range(len(versions)), versions if labels else [""] * len(versions), rotation=25, ha="right",
                  fontsize=7)
    ax.set_xlim(-0.5, len(versions) - 0.5)
    if current in versions:
        ax.axvline(versions.index(current), color="0.5", lw=1, ls=":")


def _legend_right(ax: Any, rows: int = 9) -> None:
    """A legend right of the axes, in as many columns as keep it within ``rows`` lines."""
    n = len(ax.get_legend_handles_labels()[0])
    if n:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, ncol=math.ceil(n / rows),
                  borderaxespad=0)


def _legend_width(labels: list[str], rows: int = 9) -> float:
    """Inches a right-hand legend of ``labels`` needs (see :func:`_legend_right`)."""
    if not labels:
        return 0.2
    ncol = math.ceil(len(labels) / rows)
    return ncol * (max(len(t) for t in labels) * _CHAR_IN + 0.45) + 0.2


def _version_margin(versions: list[str]) -> float:
    """Inches below the axes for version labels rotated by 25 degrees."""
    return 0.25 + 0.45 * max((len(v) for v in versions), default=0) * _CHAR_IN


def accuracy_history(tables: pd.DataFrame, versions: list[str], current: str, flagged: set[tuple[str, str]],
                     path: Path) -> Path | None:
    """Headline metric of every table row across ``versions`` (one line per row; a red ring
    marks a row flagged as regressed in that version). ``tables``: one profile and machine,
    one record per (version, table, row); ``flagged``: {(version, "table|row_id")}."""
    present = [t for t in ("cityscapes", "kitti") if (tables["table"] == t).any()] if len(tables) else []
    if not present:
        return None
    pos = {v: i for i, v in enumerate(versions)}
    labels = list(dict.fromkeys(f"{p} {s}" for p, s in zip(tables["precision"], tables["shrinkage"])))
    lay = _Layout(len(present), 1, 7.5, 1.9, left=0.75, right=_legend_width(labels), top=0.3,
                  bottom=_version_margin(versions), vgap=0.4)
    for (ax,), table in zip(lay.axes, present):
        metric, ylabel = HEADLINE_METRIC[table]
        sub = tables[tables["table"] == table]
        for (prec, shrink), grp in sub.groupby(["precision", "shrinkage"], sort=False):
            xs = [pos[v] for v in grp["version"]]
            ys = [np.nan if m.get(metric) is None else m.get(metric) for m in grp["metrics"]]
            ax.plot(xs, ys, "o-", ms=3, lw=1, label=f"{prec} {shrink}")
            for x, y, v, row_id in zip(xs, ys, grp["version"], grp["row_id"]):
                if (v, f"{table}|{row_id}") in flagged:
                    ax.plot([x], [y], "o", ms=10, mfc="none", mec="red", mew=1.6)
        _version_axis(ax, versions, current, labels=ax is lay.axes[-1][0])
        ax.set_ylabel(ylabel.split(" (")[0], fontsize=8)
        _title(ax, f"{TABLE_TITLES[table]}: {ylabel}")
        _legend_right(ax)
    return lay.save(path)


def timing_history(layer: pd.DataFrame, model: pd.DataFrame, regressed: pd.Series, versions: list[str],
                   current: str, path: Path) -> Path | None:
    """One machine across ``versions``: geometric-mean WCC / dense ratio per backend and keep
    ratio (``layer``: :func:`bench.report.sections.layer_history` rows), model latency per
    variant (``model``: :func:`bench.report.sections.model_history` rows), and the number of
    timing rows flagged as regressed in each version (``regressed``: version -> count)."""
    if not len(layer) and not len(model):
        return None
    pos = {v: i for i, v in enumerate(versions)}
    # Colour: backend and keep ratio; line style: dtype / device (GPU runs time two dtypes).
    combos = sorted(set(zip(layer["backend"], layer["keep_ratio"])))
    colours = dict(zip(combos, sns.color_palette("tab20" if len(combos) > 10 else "tab10", len(combos))))
    kinds = sorted(set(zip(layer["device"], layer["dtype"])))
    styles = dict(zip(kinds, ["-", "--", ":", "-."] * 4))
    lines = [(g, f"{b} k={k:g}" + (f" {dt}" if len(kinds) > 1 else ""))
             for g in layer.groupby(["backend", "keep_ratio", "dtype", "device"]) for b, k, dt, _ in [g[0]]]
    backend = ["" if pd.isna(b) else f" [{b}]" for b in model["backend"]] if len(model) else []
    model_groups = list(model.assign(_b=backend).groupby(["input", "device", "variant", "_b"], sort=False)) \
        if len(model) else []
    model_labels = [f"{variant}{b} {inp}" for (inp, _, variant, b), _ in model_groups]
    right = max(_legend_width([t for _, t in lines]), _legend_width(model_labels))
    lay = _Layout(3, 1, 7.5, [2.2, 2.2, 0.9], left=0.75, right=right, top=0.3, bottom=_version_margin(versions),
                  vgap=0.4)
    axes = [row[0] for row in lay.axes]
    for ((backend_, keep, dtype, device), s), label in lines:
        axes[0].plot([pos[v] for v in s["version"]], s["ratio"], marker="o", ms=3, lw=1,
                     color=colours[(backend_, keep)], ls=styles[(device, dtype)], label=label)
    if len(layer):
        axes[0].axhline(1, color="0.3", lw=0.8)
        _plain_log(axes[0], base=2)
        _title(axes[0], f"WCC / best dense, geometric mean over shapes (fwd, J={int(layer['levels'].max())})")
    else:
        _title(axes[0], "WCC / best dense: no layer timing")
    for ((_, _, _, _), grp), label in zip(model_groups, model_labels):
        axes[1].plot([pos[v] for v in grp["version"]], grp["median_s"] * 1e3, "o-", ms=3, lw=1, label=label)
    if len(model):
        _plain_log(axes[1])
    _title(axes[1], "Model latency, median ms (log scale)")
    counts = [int(regressed.get(v, 0)) for v in versions]
    axes[2].bar(range(len(versions)), counts, color=["#c0392b" if c else "#95a5a6" for c in counts])
    axes[2].set_ylim(0, max(1, max(counts, default=0)) * 1.15)
    axes[2].yaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True, nbins=3))
    _title(axes[2], "Timing rows flagged as regressed")
    for ax, rows in zip(axes, (9, 9, 3)):
        _version_axis(ax, versions, current, labels=ax is axes[-1])
        _legend_right(ax, rows)
    return lay.save(path)


def resolution_ablation(record: dict[str, Any], path: Path) -> Path | None:
    """Drop of each WCC row against 8/8 (same checkpoints) vs evaluation size, from one
    ``ablation`` record; x: the deepest feature map's width, labelled with the image size."""
    table = record["table"]
    metric, label = HEADLINE_METRIC[table]
    rows = [r for r in record["rows"] if r["row_id"] != "q8_8"]
    if not rows:
        return None
    palette = sns.color_palette("deep")
    lay = _Layout(1, 1, 5.0, 2.8, left=0.85, right=0.3, top=0.35, bottom=0.75)
    ax = lay.axes[0][0]
    order = {"wcc50": 0, "wcc25": 1, "wcc12": 2}
    for i, row_id in enumerate(sorted({r["row_id"] for r in rows}, key=lambda v: order.get(v, 9))):
        pts = sorted((r["eval_size"][1], r["drop_vs_q8_8"].get(metric), r["shrinkage"], r["feature_map"])
                     for r in rows if r["row_id"] == row_id)
        xs = [p[0] for p in pts if p[1] is not None]
        ys = [p[1] for p in pts if p[1] is not None]
        ax.plot(xs, ys, "s-", color=palette[(1 + i) % 10], label=f"WCC {pts[0][2]} - 8/8")
    sizes = sorted({(r["eval_size"][0], r["eval_size"][1], *r["feature_map"]) for r in rows}, key=lambda t: t[1])
    ax.axhline(0.0, color="0.5", lw=0.8)
    ax.set_xscale("log", base=2)
    ax.set_xticks([t[1] for t in sizes], [f"{h}x{w}\n({fh}x{fw})" for h, w, fh, fw in sizes], fontsize=7)
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("evaluation size (deepest feature map)", fontsize=8)
    ax.set_ylabel(f"{label}: WCC - 8/8", fontsize=8)
    _title(ax, f"{TABLE_TITLES[table]}: WCC's drop by evaluation size", 9)
    ax.legend(fontsize=7, frameon=False)
    return lay.save(path)
