"""The tables printed at the end of a timing run (tabulate): WCC / dense ratios, model rows."""

from __future__ import annotations

from typing import Any

__all__ = ["layer_ratio_table", "model_table", "deployed_table"]


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v * 1e3:.3g}"


def _ratio(row: dict[str, Any] | None) -> str:
    if row is None:
        return ""
    if row.get("error"):
        return "n/a"
    r = row.get("ratio_to_dense")
    return "-" if r is None else f"{r:.2f}"


def layer_ratio_table(rows: list[dict[str, Any]]) -> str:
    """One line per (shape, direction, dtype, WCC backend, J): the best dense time and op, then
    QuantConv2d and WCC at each keep ratio as multiples of it (below 1 = faster than dense)."""
    from tabulate import tabulate

    keeps = sorted({r["keep_ratio"] for r in rows if r["op"] == "wcc"}, reverse=True)
    groups: dict[tuple, dict[str, Any]] = {}
    for r in rows:
        base = (r["shape_set"], r["shape_label"], r["direction"], r["dtype"])
        if r["op"] == "wcc":
            line = groups.setdefault(base + (r["backend"], r["levels"]), {"base": base})
            line[r["keep_ratio"]] = r
    quant = {(r["shape_set"], r["shape_label"], r["direction"], r["dtype"]): r for r in rows if r["op"] == "quantconv"}
    dense = {(r["shape_set"], r["shape_label"], r["direction"], r["dtype"]): r for r in rows if r.get("dense_op")}
    table = []
    for key, line in groups.items():
        base = line["base"]
        ref = dense.get(base)
        dense_txt = f"{_ms(ref['dense_median_s'])} ({ref['dense_op']})" if ref else "n/a"
        table.append([base[0], base[1], base[2], base[3], dense_txt, _ratio(quant.get(base)), key[4], key[5],
                      *(_ratio(line.get(k)) for k in keeps)])
    headers = ["shape set", "shape", "dir", "dtype", "best dense ms (op)", "quant/dense", "backend", "J",
               *(f"wcc k={k:g}" for k in keeps)]
    errors = sorted({f"{r['op']}[{r.get('backend') or '-'}]: {r['error']}" for r in rows if r.get("error")})
    text = tabulate(table, headers=headers, tablefmt="simple", disable_numparse=True)
    if errors:
        text += "\n\nn/a rows (first of each kind):\n" + "\n".join(f"  {e}" for e in errors[:10])
    return text


def model_table(rows: list[dict[str, Any]]) -> str:
    from tabulate import tabulate

    def mb(v: int | None) -> str:
        return "-" if v is None else f"{v / 2**20:.0f}"

    table = [[r["model"], "x".join(map(str, r["input"])), r["dtype"], r["variant"], r["backend"] or "-",
              _ms(r["median_s"]), _ms(r["iqr_s"]),
              "-" if r.get("ratio_to_best_runtime") is None else f"{r['ratio_to_best_runtime']:.2f}",
              _ms(r.get("floor_s")), _ratio(r), mb(r["peak_mem_bytes"]), mb(r["train_saved_bytes"]),
              mb(r["train_peak_bytes"]), (r.get("error") or r.get("memory_error") or "")[:60]]
             for r in rows]
    headers = ["model", "input", "dtype", "variant", "backend", "median ms", "IQR ms", "x best dense", "floor ms",
               "x dense (eager)", "peak MiB",
               "train saved MiB", "train peak MiB", "error"]
    return tabulate(table, headers=headers, tablefmt="simple", disable_numparse=True)


def deployed_table(rows: list[dict[str, Any]]) -> str:
    """Forward layer rows, one line per shape: each op's median ms (eager, deployed runtimes,
    QuantConv2d, WCC per backend/keep/J) with its floor, and WCC / fastest dense baseline."""
    from tabulate import tabulate

    table = []
    for r in rows:
        if r["direction"] != "fwd":
            continue
        op = f"wcc[{r['backend']} k={r['keep_ratio']:g} J={r['levels']}]" if r["op"] == "wcc" else r["op"]
        ratio = r.get("ratio_to_best_runtime")
        table.append([r["shape_label"], op, r.get("precision") or "-", _ms(r.get("median_s")), _ms(r.get("floor_s")),
                      "n/a" if r.get("error") else "-" if ratio is None else f"{ratio:.2f}",
                      r.get("best_runtime_op") or "-",
                      "-" if r.get("max_rel_err") is None else f"{r['max_rel_err']:.1e}",
                      (r.get("error") or "")[:50]])
    headers = ["shape", "op", "precision", "median ms", "floor ms", "x best dense", "best dense op", "rel err",
               "skipped / error"]
    return tabulate(table, headers=headers, tablefmt="simple", disable_numparse=True)
