"""Building the reports: one static folder per version and an index, from results only.

::

    reports/index.html                  versions, newest first, with headline numbers
    reports/<version>/index.html        tables, plots, regressions, environment cards
    reports/<version>/img/*.png         its figures (relative links: opens from disk)

A version's report shows that version's results and the history *up to* it, and flags every
measurement that regressed against the latest earlier version measuring the same thing on the
same machine (:mod:`bench.report.regressions`). Pages are Jinja2 templates with autoescaping;
no JavaScript, no external resource.

So a version's folder depends only on the records of that version and the earlier ones (plus
the report code and the rules): ``<version>/.inputs.sha256`` stores that fingerprint, and a
rebuild skips the versions whose fingerprint has not changed (``force=True`` rebuilds all).
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable
from urllib.parse import quote

import pandas as pd

from bench.report import plots, sections
from bench.report.format import compare_rows, env_card, group_rows, is_unavailable, short_machine_names
from bench.report.load import LoadError, Results, load_results
from bench.report.regressions import Rules, group_summary, history, measurements
from bench.store import atomic_write_text

__all__ = ["BuildSummary", "build_reports", "render_env"]

_TEMPLATES = Path(__file__).resolve().parent / "templates"


@dataclass
class BuildSummary:
    out: Path
    versions: list[str]  # the versions asked for (built or up to date)
    regressions: dict[str, int]  # version -> regressed measurements, every version
    seconds: float
    pages: list[Path] = field(default_factory=list)  # written now
    skipped: list[str] = field(default_factory=list)  # up to date, not rebuilt


_FINGERPRINT = ".inputs.sha256"


def _code_digest() -> str:
    """The report code, templates, the row model, the baseline rule and the published numbers: a
    change in any rebuilds everything."""
    here = Path(__file__).resolve().parent
    bench = here.parent
    digest = hashlib.sha256()
    inputs = [*here.glob("*.py"), *(here / "templates").glob("*.j2"), bench / "tables" / "paper.py",
              bench / "rows.py", bench / "baseline.py"]
    for path in sorted(inputs):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def _fingerprints(results: Results, order: list[str], rules: Rules) -> dict[str, str]:
    """version -> digest of everything its folder is made from (its records and the earlier
    versions' records - path, size, modification time - the rules and the code)."""
    running = hashlib.sha256(f"{_code_digest()}|{rules!r}".encode())
    out = {}
    for version in order:
        for path in sorted(results.records.loc[results.records["version"] == version, "path"]):
            st = os.stat(path)
            running.update(f"{version}|{path}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        out[version] = running.copy().hexdigest()
    return out


def _up_to_date(folder: Path, fingerprint: str) -> bool:
    try:
        return (folder / "index.html").is_file() and (folder / _FINGERPRINT).read_text().strip() == fingerprint
    except OSError:
        return False


def render_env() -> Any:
    """The Jinja2 environment of the report templates (autoescaping on)."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(_TEMPLATES)), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.tests["unavailable"] = is_unavailable
    return env


def _safe_name(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_.+" else "_" for c in text)


def _version_info(results: Results, version: str) -> dict[str, Any]:
    row = results.versions[results.versions["version"] == version].iloc[0]
    return {"version": version, "commit": row["commit"] or "not recorded", "dirty": bool(row["dirty"]),
            "package_version": row["package_version"] or "unknown",
            "first": row["first_created"].strftime("%Y-%m-%d %H:%M UTC"),
            "last": row["last_created"].strftime("%Y-%m-%d %H:%M UTC"), "n_records": int(row["n_records"])}


def _figure(path: Path | None, folder: Path, title: str, caption: str) -> dict[str, str] | None:
    if path is None:
        return None
    return {"src": path.relative_to(folder).as_posix(), "title": title, "caption": caption}


def _accuracy_section(cur: Results, upto_tables: pd.DataFrame, flagged: pd.DataFrame, version: str,
                      order: list[str], folder: Path) -> dict[str, Any]:
    latest = sections.latest_tables(cur.tables)
    groups = []
    for i, ((table, profile, data, machine), grp) in enumerate(
            latest.groupby(["table", "profile", "data", "machine"], sort=False)):
        synthetic = bool(grp["synthetic"].any())
        groups.append({
            "title": plots.TABLE_TITLES[table], "table": table, "profile": profile, "data": data,
            "synthetic": synthetic, "machine": cur.machines.get(machine, machine),
            "published": "Cityscapes val" if table == "cityscapes" else "KITTI (Eigen split)",
            "html": sections.accuracy_table(grp, f"acc{i}"),
            "start": sections.table_start(grp),
        })
    figures = []
    img = folder / "img"
    figures.append(_figure(plots.accuracy_vs_bits(latest, img / "accuracy_vs_bits.png"), folder,
                           "Accuracy vs equivalent bits",
                           "Open markers: published (paper's data); filled: measured here, data source in the legend. "
                           "WCC equivalent bits = keep ratio x act bits + 1/C with C = "
                           f"{plots.REPRESENTATIVE_CHANNELS}."))
    # The newest resolution ablation per table (docs/design.md §4.2), plotted as it was recorded.
    paths: list[str] = []
    if len(cur.records):
        paths = list(cur.records[cur.records["kind"] == "ablation"].sort_values("created")["path"])
    newest: dict[str, dict[str, Any]] = {}
    for p in paths:
        rec = json.loads(Path(p).read_text())
        newest[rec["table"]] = rec
    for table, rec in sorted(newest.items()):
        figures.append(_figure(plots.resolution_ablation(rec, img / f"resolution_ablation_{table}.png"), folder,
                               f"Resolution ablation - {plots.TABLE_TITLES[table]}",
                               f"Measured on {rec['data']}: the same 8/8 and WCC checkpoints evaluated at each size; "
                               "WCC's premise is high-resolution feature maps."))
    hist_figs = []
    history_tables = sections.latest_tables(upto_tables, per_version=True)
    # One figure per (profile, machine): a panel per table, each showing the data sources this
    # version measured that table on.
    for i, ((profile, machine), grp) in enumerate(latest.groupby(["profile", "machine"], sort=False)):
        shown = set(zip(grp["table"], grp["data"]))
        same = history_tables[(history_tables["profile"] == profile) & (history_tables["machine"] == machine)]
        same = same[[(t, d) in shown for t, d in zip(same["table"], same["data"])]]
        bad = flagged[(flagged["bench"] == "accuracy") & (flagged["machine"] == machine)]
        marks = set()
        for v, key in zip(bad["new_version"], bad["key"]):  # AccuracyKey (see regressions.measurements)
            if key.profile == profile and (key.table, key.data) in shown:
                marks.add((v, f"{key.table}|{key.row_id}"))
        versions = [v for v in order if v in set(same["version"])]
        fig = plots.accuracy_history(same, versions, version, marks, img / f"history_accuracy_{i}.png")
        sources = "; ".join(sorted({d for _, d in shown}))
        hist_figs.append(_figure(fig, folder, f"Accuracy history - profile {profile}",
                                 f"Measured on {sources}; machine {cur.machines.get(machine, machine)}. "
                                 "Red rings: flagged as regressed in that version."))
    return {"groups": groups, "figures": [f for f in figures if f], "history": [f for f in hist_figs if f]}


def _machine_models(cur: Results, machine: str, device: str, dtype: str) -> pd.DataFrame:
    model = sections.latest_model(cur.model)
    if not len(model):
        return model
    return model[(model["machine"] == machine) & (model["device"] == device) & (model["dtype"] == dtype)]


def _timing_section(cur: Results, summaries: tuple[pd.DataFrame, pd.DataFrame], hist: pd.DataFrame, version: str,
                    order: list[str], folder: Path) -> dict[str, Any]:
    img = folder / "img"
    layer = sections.latest_layer(cur.layer)
    speed = []
    timing_layer = layer[layer["source"] == "timing"] if len(layer) else layer
    for i, ((machine, device, dtype), grp) in enumerate(
            timing_layer.groupby(["machine", "device", "dtype"], sort=True) if len(timing_layer) else []):
        label = cur.machines.get(machine, machine)
        fig = plots.speed_heatmap(grp, img / f"speed_{i}.png", f"{label}\n{device}, {dtype}")
        speed.append({"machine": label, "device": device, "dtype": dtype,
                      "figure": _figure(fig, folder, "WCC / dense per shape and keep ratio",
                                        "Median time over the best dense op of the same shape (NCHW conv, "
                                        "channels-last conv or matmul); grey: not timed or could not run."),
                      "summary": sections.speed_summary(grp, f"speed{i}"), "errors": sections.error_summary(grp),
                      "deployed": sections.deployed_table(grp, f"deployed{i}"),
                      "summary_best": sections.speed_summary(grp, f"speedbest{i}", "ratio_to_best_runtime"),
                      "verdict": sections.int8_verdict(grp, _machine_models(cur, machine, device, dtype)),
                      "rows": len(grp)})
    model = sections.latest_model(cur.model)
    model_fig = _figure(plots.model_plot(model, cur.machines, img / "model.png"), folder, "Model latency and memory",
                        "Median latency with IQR whiskers; memory: peak of one inference forward (bars) and the "
                        "activations a training step saves (black lines).")
    history_figs = []
    lay_hist, mod_hist = summaries
    upto_versions = set(order[: order.index(version) + 1])
    for i, machine in enumerate(sorted(set(cur.layer["machine"]) | set(cur.model["machine"]))):
        lay = lay_hist[(lay_hist["machine"] == machine) & lay_hist["version"].isin(upto_versions)]
        mod = mod_hist[(mod_hist["machine"] == machine) & mod_hist["version"].isin(upto_versions)] \
            if len(mod_hist) else mod_hist
        versions = [v for v in order if v in set(lay["version"]) | set(mod["version"])]
        bad = hist[(hist["machine"] == machine) & (hist["rule"] == "timing") & (hist["status"] == "regressed")]
        fig = plots.timing_history(lay, mod, bad.groupby("new_version").size(), versions, version,
                                   img / f"history_timing_{i}.png")
        history_figs.append(_figure(fig, folder, f"Timing history - {cur.machines.get(machine, machine)}",
                                    "Dotted line: this version."))
    return {"speed": speed, "model_figure": model_fig, "model_table": sections.model_table(model, cur.machines),
            "history": [f for f in history_figs if f],
            "pbench": sections.pbench_table(cur.pbench, cur.machines)}


def _regression_section(hist: pd.DataFrame, n_meas: int, names: dict[str, str],
                        rules: Rules) -> dict[str, Any]:
    counts = hist["status"].value_counts()
    bad, good = hist[hist["status"] == "regressed"], hist[hist["status"] == "improved"]
    return {
        "regressed": compare_rows(bad, names), "improved": compare_rows(good, names),
        "regressed_groups": group_rows(group_summary(bad), names),
        "improved_groups": group_rows(group_summary(good), names),
        "n_unchanged": int(counts.get("unchanged", 0)),
        "n_inconclusive": int(counts.get("inconclusive", 0)),
        # Every timing row with its band between rounds; the note says "noise" where the change is inside it.
        "timing_bands": [[*r[:-1], f"{status}; {r[-1]}" if r[-1] else status] for r, status in
                         zip(compare_rows(hist[hist["rule"] == "timing"], names),
                             hist.loc[hist["rule"] == "timing", "status"])],
        "n_compared": len(hist),
        "n_new": max(0, n_meas - len(hist)),
        "bases": sorted(set(hist["base_version"])),
        "rules": rules.describe(),
    }


def _env_cards(cur: Results) -> list[dict[str, Any]]:
    cards = []
    rec = cur.records.assign(_probed=[isinstance(e.get("probes"), dict) for e in cur.records["environment"]])
    for machine, grp in rec.sort_values(["_probed", "created"]).groupby("machine", sort=True):
        last = grp.iloc[-1]  # probed records (timing) first, newest last
        cards.append({"machine": machine, "label": cur.machines.get(machine, machine),
                      "sections": env_card(last["environment"], last["energy_source"]),
                      "records": [f"{k}: {r}" for k, r in zip(grp["kind"], grp["record"])]})
    return cards


def _build_version(results: Results, n_meas: pd.Series, hist: pd.DataFrame, summaries: tuple[pd.DataFrame, ...],
                   version: str, order: list[str], out: Path, rules: Rules,
                   jenv: Any) -> tuple[Path, int, dict[str, Any]]:
    folder = out / _safe_name(version)
    (folder / _FINGERPRINT).unlink(missing_ok=True)  # written again only once the page is complete
    img = folder / "img"
    if img.is_dir():  # figures of an earlier build of this version (only our own PNGs)
        for old in img.glob("*.png"):
            old.unlink()
    upto_versions = order[: order.index(version) + 1]
    cur = results.select_versions([version])
    upto_tables = results.tables[results.tables["version"].isin(upto_versions)]
    hist_v = hist[hist["new_version"] == version]
    flagged = hist[hist["new_version"].isin(upto_versions) & (hist["status"] == "regressed")]
    ctx: dict[str, Any] = {
        "info": _version_info(results, version),
        "machines": [(m, cur.machines[m]) for m in sorted(cur.machines)],
        "regressions": _regression_section(hist_v, int(n_meas.get(version, 0)),
                                           short_machine_names(results.machines), rules),
        "accuracy": _accuracy_section(cur, upto_tables, flagged, version, order, folder),
        "timing": _timing_section(cur, summaries, hist, version, order, folder),
        "env_cards": _env_cards(cur),
        "sources": sorted(cur.records["path"]),
    }
    page = folder / "index.html"
    atomic_write_text(page, jenv.get_template("version.html.j2").render(**ctx))
    head = sections.headline(cur.tables, cur.layer, cur.model, short_machine_names(results.machines))
    return page, len(ctx["regressions"]["regressed"]), head


# What the worker processes of _map_versions inherit (fork): the loaded results, not pickled.
_SHARED: dict[str, Any] = {}


def _build_shared(version: str) -> tuple[Path, int, dict[str, Any]]:
    results, n_meas, hist, summaries, order, out, rules = _SHARED["args"]
    return _build_version(results, n_meas, hist, summaries, version, order, out, rules, render_env())


def _map_versions(todo: list[str], args: tuple, jobs: int | None) -> list[tuple[Path, int, dict[str, Any]]]:
    """Build each version's folder; versions are independent, so with ``jobs`` > 1 (default:
    the CPU count) they are built in forked worker processes (figures dominate the time)."""
    import multiprocessing
    import os

    if not jobs:
        jobs = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    _SHARED["args"] = args
    try:
        if jobs <= 1 or len(todo) <= 1 or "fork" not in multiprocessing.get_all_start_methods():
            return [_build_shared(v) for v in todo]
        from concurrent.futures import ProcessPoolExecutor

        # Freeze the loaded objects out of the cyclic GC: a collection in a worker would touch
        # every object header and copy the whole (copy-on-write) heap into each process.
        gc.collect()
        gc.freeze()
        try:
            with ProcessPoolExecutor(min(jobs, len(todo)), mp_context=multiprocessing.get_context("fork")) as pool:
                return list(pool.map(_build_shared, todo))
        finally:
            gc.unfreeze()
    finally:
        _SHARED.clear()


def build_reports(results_paths: str | Path | Iterable[str | Path], out: str | Path, rules: Rules | None = None,
                  versions: list[str] | None = None, validate: bool = False,
                  log: Callable[[str], None] | None = None, jobs: int | None = None,
                  force: bool = False) -> BuildSummary:
    """Build ``out/<version>/index.html`` for every version (or the ``versions`` given) whose
    inputs changed since its last build (every one with ``force``), and ``out/index.html``
    listing all versions; ``jobs`` worker processes (default: one per CPU). Raises
    :class:`LoadError` when there are no records."""
    start = time.perf_counter()
    rules = rules or Rules()
    log = log or (lambda _msg: None)
    # Invalid records: an error with --validate, else left out with a warning on the index page.
    results = load_results(results_paths, skip_invalid=not validate)
    for problem in results.skipped:
        log(f"warning: skipped invalid record {problem}")
    if not len(results.records):
        raise LoadError(f"no results records under {results_paths}; run `python -m bench tables` or "
                        f"`python -m bench timing` first")
    order = results.version_order
    unknown = [v for v in versions or [] if v not in order]
    if unknown:
        raise LoadError(f"version(s) {unknown} not in the results; versions: {order}")
    log(f"loaded {len(results.records)} records, {len(order)} versions ({time.perf_counter() - start:.1f} s)")
    meas = measurements(results, rules)
    hist = history(meas, order, rules)
    log(f"compared {len(hist)} measurement pairs ({time.perf_counter() - start:.1f} s)")
    out = Path(out)
    jenv = render_env()
    pages, regressed, heads = [], {}, {}
    fingerprints = _fingerprints(results, order, rules)
    wanted = list(versions or order)
    todo = [v for v in wanted if force or not _up_to_date(out / _safe_name(v), fingerprints[v])]
    skipped = [v for v in wanted if v not in todo]
    if skipped:
        log(f"{len(skipped)} version(s) up to date, not rebuilt (force=True / --force rebuilds them)")
    summaries = (sections.layer_history(results.layer), sections.model_history(results.model))
    # The raw samples are not needed by the pages (verdicts use round medians), nor by the workers.
    n_meas = meas.groupby("version").size()
    del meas
    results.layer = results.layer.drop(columns="samples")
    results.model = results.model.drop(columns="samples")
    results.pbench = results.pbench.drop(columns="samples")
    args = (results, n_meas, hist, summaries, order, out, rules)
    for version, (page, n_bad, head) in zip(todo, _map_versions(todo, args, jobs)):
        atomic_write_text(page.parent / _FINGERPRINT, fingerprints[version] + "\n")
        pages.append(page)
        regressed[version], heads[version] = n_bad, head
        log(f"{page} ({n_bad} regressions)")
    index_rows = []
    for version in reversed(order):
        info = _version_info(results, version)
        if version not in heads:  # not rebuilt now: summarise it all the same
            cur = results.select_versions([version])
            heads[version] = sections.headline(cur.tables, cur.layer, cur.model, short_machine_names(results.machines))
            regressed[version] = int(((hist["new_version"] == version) & (hist["status"] == "regressed")).sum())
        machines = sorted(set(results.records.loc[results.records["version"] == version, "machine"]))
        index_rows.append({**info, "href": f"{quote(_safe_name(version), safe='+')}/index.html",
                           "built": (out / _safe_name(version) / "index.html").is_file(),
                           "machines": [results.machines[m].split(" · ", 1) for m in machines],
                           "head": heads[version],
                           "regressed": regressed[version]})
    index = out / "index.html"
    atomic_write_text(index, jenv.get_template("index.html.j2").render(versions=index_rows, rules=rules.describe(),
                                                                        invalid=results.skipped))
    pages.append(index)
    return BuildSummary(out, wanted, regressed, time.perf_counter() - start, pages, skipped)
