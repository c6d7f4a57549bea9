"""Reports and regression tracking: rules, loader, ``bench report`` / ``bench compare``, and the
rendered pages in headless Chromium."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _results_history import MACHINES, Injected, table_records, timing_record, write_history

from bench.cli import main as bench_main
from bench.report.load import LoadError, load_results, machine_of, version_of
from bench.report.regressions import Rules, compare, measurements
from bench.rows import LayerKey
from bench.store import ResultStore

VERSIONS = 4
SLOW_VERSION = 2  # the injected change lands here and stays


def _slow_rows(row: dict) -> bool:
    return row["op"] == "wcc" and row["backend"] == "cpu" and row["keep_ratio"] == 0.25


INJECTED = Injected(version=SLOW_VERSION, machine="cpu", slowdown=1.2, layer_match=_slow_rows, miou_drop=0.03)


#: The synthetic machines' run-to-run noise (sd of log time between separately taken records), as
#: ``nox -s gate_check`` would calibrate it: separate records are judged with it (bench.report.verdict).
RUN_TO_RUN_SD = 0.02


def _calibrated(root: Path) -> Rules:
    return Rules(run_to_run_sd={m: RUN_TO_RUN_SD for m in load_results(root).machines})


def _calibration_file(tmp_path: Path, *roots: Path) -> str:
    from bench.report.calibration import write_calibration

    path = tmp_path / "run-to-run.json"
    for root in roots:
        meas = measurements(load_results(root))
        for machine in load_results(root).machines:
            # Calibrated under the setting these records were timed with (source, threads).
            key = next(k for m, k, r in zip(meas["machine"], meas["key"], meas["rule"])
                       if m == machine and r == "timing")
            write_calibration(machine, RUN_TO_RUN_SD, sessions=5, rows=10, path=path, source="test",
                              setting=(key.source, key.threads))
    return str(path)


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    root = tmp_path_factory.mktemp("history") / "results"
    labels = write_history(root, versions=VERSIONS, inject=INJECTED)
    return root, labels


@pytest.fixture(scope="module")
def reports(history: tuple[Path, list[str]]) -> tuple[Path, list[str], object]:
    from bench.report.build import build_reports

    root, labels = history
    out = root.parent / "reports"
    t0 = time.perf_counter()
    summary = build_reports(root, out, rules=_calibrated(root))
    print(f"\n{VERSIONS} versions (quick grids, 2 machines) built in {time.perf_counter() - t0:.1f} s")
    return out, labels, summary


# ----------------------------------------------------------------------------- rules


def _meas(version: str, values: dict[str, tuple[float, list[float] | None]], machine: str = "m1",
          rule: str = "timing", metric: str = "time", errors: dict[str, str] | None = None,
          session: str | None = "s1") -> pd.DataFrame:
    """Measurements whose listed values are round medians (rounds of one session by default)."""
    rows = [{"version": version, "machine": machine, "created": pd.Timestamp("2026-01-01", tz="UTC"),
             "bench": "layer", "key": key, "label": str(key), "metric": metric, "rule": rule, "value": v,
             "samples": None, "error": (errors or {}).get(key), "rounds": r, "session": session}
            for key, (v, r) in values.items()]
    return pd.DataFrame(rows)


def _timing_pair(base: np.ndarray, new: np.ndarray, **kw) -> pd.Series:
    out = compare(_meas("a", {"k": (float(np.median(base)), list(base))}),
                  _meas("b", {"k": (float(np.median(new)), list(new))}), **kw)
    assert len(out) == 1
    return out.iloc[0]


def test_timing_rule_needs_factor_and_a_band_that_excludes_noise():
    rng = np.random.default_rng(0)
    base = 1e-3 * rng.lognormal(0, 0.02, 5)  # five rounds' medians
    slow = _timing_pair(base, 1.2e-3 * rng.lognormal(0, 0.02, 5))
    assert slow["status"] == "regressed" and slow["band"] < 1.1 and slow["change"] == pytest.approx(1.2, rel=0.05)
    fast = _timing_pair(base, 0.8e-3 * rng.lognormal(0, 0.02, 5))
    assert fast["status"] == "improved"
    # Inside the factor: noise-sized shifts never flag.
    small = _timing_pair(base, 1.05e-3 * rng.lognormal(0, 0.005, 5))
    assert small["status"] == "unchanged"
    # Median 20% slower but the rounds scatter wider than the factor: inconclusive, not flagged.
    noisy = _timing_pair(base * np.array([1, 1.5, 1, 1.5, 1]), 1.2e-3 * rng.lognormal(0, 0.02, 5) * [1.5, 1, 1.5, 1, 1])
    assert noisy["status"] == "inconclusive" and "band" in noisy["note"] and noisy["band"] > 1.1
    # A stricter factor lets the 20% slowdown through unflagged.
    assert _timing_pair(base, 1.2e-3 * rng.lognormal(0, 0.02, 5), rules=Rules(factor=1.3))["status"] == "unchanged"


def test_timing_rule_on_one_round_or_separate_sessions():
    # Old records are one round each: no band between rounds, so past the factor it is inconclusive.
    row = compare(_meas("a", {"k": (1.0, None)}), _meas("b", {"k": (1.25, None)})).iloc[0]
    assert row["status"] == "inconclusive" and "one round" in row["note"]
    # Separately taken records (different sessions): the rounds do not cover the time between them.
    base, new = _meas("a", {"k": (1.0, [1.0, 1.01, 0.99])}), _meas("b", {"k": (1.3, [1.3, 1.31, 1.29])}, session="s2")
    row = compare(base, new).iloc[0]
    assert row["status"] == "inconclusive" and "bench ab" in row["note"]
    # ... unless the machine's run-to-run noise is calibrated.
    assert compare(base, new, Rules(run_to_run_sd={"m1": 0.02})).iloc[0]["status"] == "regressed"
    assert compare(base, new, Rules(run_to_run_sd={"m1": 0.2})).iloc[0]["status"] == "inconclusive"
    # A calibration measured under another setting (the gate check's one thread in CPU time) says
    # nothing about rows timed otherwise: they stay inconclusive.
    other = Rules(run_to_run_sd={"m1": 0.02}, calibrated_setting={"m1": ("timing:process-clock", "1")})
    assert compare(base, new, other).iloc[0]["status"] == "inconclusive"
    # Interleaved rounds of one session need no calibration.
    assert compare(base, _meas("b", {"k": (1.3, [1.3, 1.31, 1.29])})).iloc[0]["status"] == "regressed"


def _layer_key(op: str, backend: str | None = None, shape: str = "1x8x8@16x16") -> LayerKey:
    keep, levels = ("0.25", "3") if op == "wcc" else ("-", "-")
    return LayerKey("timing", "cpu", "2", "extra", shape, op, "fwd", "float32", backend, keep, levels)


def _by_key(df: pd.DataFrame) -> dict:
    """Comparison rows by measurement identity (a named tuple: not an index label)."""
    return {key: row for key, row in zip(df["key"], df.to_dict("records"))}


def test_timing_drift_check_compares_wcc_rows_relative_to_dense():
    rng = np.random.default_rng(1)

    def run(version: str, scale: dict[str, float]) -> pd.DataFrame:
        values = {}
        for op, ms in (("dense_cl", 10.0), ("matmul", 12.0), ("wcc", 4.0), ("quantconv", 15.0)):
            s = ms * 1e-3 * scale.get(op, 1.0) * rng.lognormal(0, 0.01, 5)
            values[_layer_key(op, "cpu" if op == "wcc" else None)] = (float(np.median(s)), list(s))
        return _meas(version, values)

    base = run("a", {})
    # The whole machine 30% slower: dense rows report it, WCC / QuantConv2d rows are drift.
    drift = _by_key(compare(base, run("b", {op: 1.3 for op in ("dense_cl", "matmul", "wcc", "quantconv")})))
    for op in ("dense_cl", "matmul"):
        assert drift[_layer_key(op)]["status"] == "regressed"
    for op, be in (("wcc", "cpu"), ("quantconv", None)):
        row = drift[_layer_key(op, be)]
        assert row["status"] == "unchanged" and "machine drift" in row["note"], row["note"]
        assert row["change"] == pytest.approx(1.3, rel=0.05)
    # WCC alone 30% slower: a regression, also relative to dense.
    real = _by_key(compare(base, run("c", {"wcc": 1.3})))[_layer_key("wcc", "cpu")]
    assert real["status"] == "regressed" and "relative to the best dense op" in real["note"]
    # Faster WCC on a slower machine: improved both ways.
    mixed = _by_key(compare(base, run("d", {"dense_cl": 1.4, "matmul": 1.4, "wcc": 1 / 1.3})))
    assert mixed[_layer_key("wcc", "cpu")]["status"] == "improved"  # x0.77 raw, x0.55 relative
    # The check can be turned off: raw times alone decide.
    raw = compare(base, run("e", {op: 1.3 for op in ("dense_cl", "matmul", "wcc")}), rules=Rules(drift_check=False))
    assert _by_key(raw)[_layer_key("wcc", "cpu")]["status"] == "regressed"


def test_timing_failures():
    ok = _meas("a", {"k": (1.0, [1.0] * 5)})
    broken = _meas("b", {"k": (None, [])}, errors={"k": "RuntimeError: boom"})
    assert compare(ok, broken).iloc[0]["status"] == "regressed"
    assert compare(broken, ok).iloc[0]["status"] == "improved"
    assert compare(broken, broken).iloc[0]["status"] == "unchanged"


def test_accuracy_and_memory_rules():
    def one(metric: str, base: float | None, new: float | None, rule: str = "accuracy") -> str:
        return compare(_meas("a", {"k": (base, None)}, rule=rule, metric=metric),
                       _meas("b", {"k": (new, None)}, rule=rule, metric=metric)).iloc[0]["status"]

    assert one("miou", 0.62, 0.605) == "regressed"  # drop 0.015 > 0.01
    assert one("miou", 0.62, 0.612) == "unchanged"
    assert one("miou", 0.62, 0.64) == "improved"
    assert one("abs_rel", 0.10, 0.106) == "regressed"  # +6% > 5%
    assert one("abs_rel", 0.10, 0.104) == "unchanged"
    assert one("rmse", 4.0, 3.7) == "improved"
    assert one("miou", 0.62, None) == "regressed"  # the metric turned non-finite
    assert one("peak_mem_bytes", 1000, 1150, rule="memory") == "regressed"
    assert one("peak_mem_bytes", 1000, 1050, rule="memory") == "unchanged"


def test_only_same_machine_and_configuration_pair():
    a = _meas("a", {"k": (1.0, None), "other": (1.0, None)}, machine="m1")
    b = _meas("b", {"k": (5.0, None)}, machine="m2")
    assert compare(a, b).empty
    c = _meas("b", {"k2": (5.0, None)}, machine="m1")
    assert compare(a, c).empty


# ----------------------------------------------------------------------------- loader


def test_version_and_machine_identity():
    env = {"commit": "0123456789abcdef", "dirty": True, "packages": {"wcc-bench": "0.1.0"}, "hostname": "h",
           "cpu": {"model": "CPU X"}, "gpu": None}
    assert version_of(env) == "0.1.0+01234567-dirty"
    assert version_of({**env, "dirty": False, "commit": None, "packages": {}}) == "unknown+nogit"
    m1, label = machine_of(env)
    assert m1 == machine_of(dict(env))[0] and label == "h · CPU X · no GPU"
    assert machine_of({**env, "gpu": "NVIDIA H100"})[0] != m1  # same host, another GPU: another machine


def test_loader_rejects_what_is_not_a_record(tmp_path: Path):
    (tmp_path / "timing").mkdir()
    (tmp_path / "timing" / "x.json").write_text(json.dumps({"hello": 1}))
    with pytest.raises(LoadError, match="x.json"):
        load_results(tmp_path)
    (tmp_path / "timing" / "x.json").write_text('{"schema": "wcc-bench/timing/v1", "median": NaN}')
    with pytest.raises(LoadError, match="non-finite|JSON"):
        load_results(tmp_path)
    with pytest.raises(LoadError, match="no such file"):
        load_results(tmp_path / "missing")


def test_loader_reads_history(history: tuple[Path, list[str]]):
    root, labels = history
    res = load_results(root)
    assert res.version_order == labels  # ordered by time, labels = package version + commit[:8]
    assert len(res.machines) == 2 and len(res.tables) == 14 * VERSIONS
    assert set(res.layer["device"]) == {"cpu", "cuda"}
    meas = measurements(res)
    assert set(meas["bench"]) == {"accuracy", "layer", "model"}


# ----------------------------------------------------------------------------- report


def test_report_flags_injected_regression(reports):
    out, labels, summary = reports
    assert summary.regressions == {v: (5 if v == labels[SLOW_VERSION] else 0) for v in labels}
    page = (out / labels[SLOW_VERSION] / "index.html").read_text()
    section = page[page.index('id="regressions"'):page.index('id="tables"')]
    assert "4 regressed" not in section and "5 regressed" in section
    flagged, bands = section.split("Every timing row with its band between rounds")
    assert flagged.count("wcc[cpu k=0.25") == 1 + 4  # the group line and the 4 rows
    # Every compared timing row is listed with its band and verdict (the rows here are single-round
    # records of separate runs: judged with the calibrated run-to-run noise, whose band is shown).
    assert bands.count("wcc[cpu k=0.25") >= 4 and "+-x1." in bands and "regressed; " in bands
    assert "Cityscapes-table 8/8 25%" in section  # the accuracy drop
    later = (out / labels[SLOW_VERSION + 1] / "index.html").read_text()  # still slow, but not slower: not flagged
    assert "no regressions" in later
    index = (out / "index.html").read_text()
    assert f'{labels[SLOW_VERSION]}/index.html#regressions"><span class="badge bad">5<' in index


def test_report_is_static_self_contained_and_labelled(reports):
    out, labels, _ = reports
    for version in labels:
        folder = out / version
        page = (folder / "index.html").read_text()
        assert "<script" not in page.lower()
        assert not re.search(r'(src|href)="(https?:)?//', page), "external resource"
        for src in re.findall(r'<img src="([^"]+)"', page):
            assert (folder / src).is_file() and (folder / src).stat().st_size > 1000
        assert len(re.findall(r'<img src="img/', page)) >= 6
        # Synthetic rows are never presented as Cityscapes / KITTI numbers.
        assert page.count("synthetic data</span>") == 2
        assert "measured: SynthStreets 96x192 (synthetic stand-in, not Cityscapes)" in page
        assert "Environment" in page and "NVIDIA H100 80GB HBM3" in page
        # Layer speed leads with WCC against the best deployed dense runtime, in plain words.
        assert "Layer speed: WCC / best deployed dense" in page
        assert "int8 dense on this machine" in page and "ORT int8 ms" in page and "WCC floor ms" in page
    index = (out / "index.html").read_text()
    assert "layer WCC / best dense" in index and "model WCC 25% / best dense" in index


def test_rebuild_skips_versions_whose_inputs_did_not_change(reports, history):
    from bench.report.build import build_reports

    out, labels, _ = reports
    root, _ = history
    again = build_reports(root, out, rules=_calibrated(root))
    assert again.skipped == labels and again.pages == [out / "index.html"]
    assert again.regressions[labels[SLOW_VERSION]] == 5  # still reported in the index
    # A record of the last version changed: only that version is rebuilt (earlier ones do not
    # depend on it; a change in version i would rebuild i and every later version).
    record = next((root / "timing").glob(f"cpu-v{VERSIONS - 1}-*.json"))
    os.utime(record, ns=(record.stat().st_atime_ns, record.stat().st_mtime_ns + 1_000_000))
    again = build_reports(root, out, jobs=1, rules=_calibrated(root))
    assert again.skipped == labels[:-1] and again.pages == [out / labels[-1] / "index.html", out / "index.html"]


def test_report_escapes_record_text(tmp_path: Path):
    from bench.report.build import build_reports

    store = ResultStore(tmp_path / "results")
    for name, rec in table_records("cpu", 0, pd.Timestamp("2026-01-01", tz="UTC").to_pydatetime(), seed=0):
        rec["data"] = "<script>alert(1)</script> SynthStreets"
        store.write("tables", name, rec)
    build_reports(tmp_path / "results", tmp_path / "reports", jobs=1)
    page = next((tmp_path / "reports").glob("*/index.html")).read_text()
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page


# ----------------------------------------------------------------------------- CLIs


def _two_reruns(tmp_path: Path, noise: float, slowdown: float = 1.0) -> tuple[Path, Path]:
    """Two timing records of the same code on the same machine (different noise draws)."""
    created = pd.Timestamp("2026-01-01", tz="UTC").to_pydatetime()
    inject = Injected(version=0, slowdown=slowdown, layer_match=_slow_rows) if slowdown != 1.0 else None
    paths = []
    for seed, inj in ((11, None), (12, inject)):
        rec = timing_record("cpu", 0, created, full=False, seed=seed, noise=noise, inject=inj)
        paths.append(ResultStore(tmp_path / f"run{seed}").write("timing", rec["name"], rec))
    return paths[0], paths[1]


def test_compare_cli(tmp_path: Path, history, capsys: pytest.CaptureFixture[str]):
    root, labels = history
    # Two noisy reruns of the same code: nothing flagged.
    base, new = _two_reruns(tmp_path, noise=0.06)
    cal = ["--calibration", _calibration_file(tmp_path, root)]
    assert bench_main(["compare", str(base), str(new), *cal]) == 0
    out = capsys.readouterr().out
    assert "REGRESSED (0)" in out and "UNCHANGED (" in out
    # The same with a 20% slowdown of some rows: flagged, exit 1.
    base, slow = _two_reruns(tmp_path / "slow", noise=0.06, slowdown=1.2)
    assert bench_main(["compare", str(base), str(slow), *cal]) == 1
    out = capsys.readouterr().out
    assert "REGRESSED (4)" in out and "wcc[cpu k=0.25] float32 (cpu)" in out
    # Without a calibration, separately taken records cannot be told apart past the factor: inconclusive.
    assert bench_main(["compare", str(base), str(slow), "--calibration", str(tmp_path / "none.json")]) == 2
    assert "no such calibration file" in capsys.readouterr().err
    assert bench_main(["compare", str(base), str(slow)]) == 0  # conftest: no calibration file here
    out = capsys.readouterr().out
    assert "REGRESSED (0)" in out and "INCONCLUSIVE" in out and "bench ab" in out
    # Two versions of one results directory, by commit prefix.
    assert bench_main(["compare", "--results", str(root), labels[SLOW_VERSION - 1].split("+")[1][:6],
                       labels[SLOW_VERSION], "--brief", *cal]) == 1
    assert bench_main(["compare", "--results", str(root), labels[0], labels[1], "--brief", *cal]) == 0
    capsys.readouterr()
    # Bad input: a missing path, an unknown version, nothing in common (another machine).
    assert bench_main(["compare", str(tmp_path / "nope"), str(new)]) == 2
    assert bench_main(["compare", "--results", str(root), "0.9.9", labels[0]]) == 2
    other = timing_record("gpu", 0, pd.Timestamp("2026-01-01", tz="UTC").to_pydatetime(), full=False, seed=3)
    other_path = ResultStore(tmp_path / "gpu").write("timing", other["name"], other)
    assert bench_main(["compare", str(base), str(other_path)]) == 2
    assert "nothing to compare" in capsys.readouterr().err


def test_report_cli(tmp_path: Path, history, capsys: pytest.CaptureFixture[str]):
    root, labels = history
    assert bench_main(["report", "--results", str(root), "--out", str(tmp_path), "--version", labels[0],
                       "--quiet", "--jobs", "1"]) == 0
    assert (tmp_path / labels[0] / "index.html").is_file() and (tmp_path / "index.html").is_file()
    assert not (tmp_path / labels[1]).exists()  # only the version asked for; the index lists all
    assert all(v in (tmp_path / "index.html").read_text() for v in labels)
    assert bench_main(["report", "--results", str(tmp_path / "none"), "--out", str(tmp_path)]) == 2
    assert "no such file" in capsys.readouterr().err


def _pytest_benchmark_record(seed: int, slowdown: float) -> dict:
    """A pytest-benchmark JSON as the retired benchmarks/conftest.py tagged it (such records still load)."""
    from _results_history import _env

    rng = np.random.default_rng(seed)
    env = _env("cpu", 0, probes=True)
    benchmarks = []
    for op, t in (("dense_nchw", 1e-3), ("wcc", 1.5e-3)):
        data = list(t * (slowdown if op == "wcc" else 1.0) * rng.lognormal(0, 0.02, 15))
        q1, med, q3 = np.percentile(data, [25, 50, 75])
        benchmarks.append({"name": f"test_layer[extra-1x256x256@128x256-fwd-{op}]", "group": "g",
                           "stats": {"median": float(med), "iqr": float(q3 - q1), "rounds": 15, "data": data},
                           "extra_info": {"case": "extra:1x256x256@128x256:fwd:float32", "op": op,
                                          "backend": "cpu" if op == "wcc" else None, "ratio_to_dense": None}})
    return {"schema": "wcc-bench/pytest-benchmark/v1", "created": "2026-01-01T00:00:00+00:00", "environment": env,
            "machine_info": {"wcc_probes": env["probes"]}, "commit_info": {"id": env["commit"]},
            "benchmarks": benchmarks}


def test_pytest_benchmark_records(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    from bench.report.build import build_reports

    paths = [ResultStore(tmp_path / name).write("pytest-benchmark", name, _pytest_benchmark_record(seed, slow))
             for name, seed, slow in (("base", 1, 1.0), ("rerun", 2, 1.0), ("slow", 3, 1.25))]
    cal = ["--calibration", _calibration_file(tmp_path, *paths)]
    assert bench_main(["compare", str(paths[0]), str(paths[1]), *cal]) == 0
    assert bench_main(["compare", str(paths[0]), str(paths[2]), *cal]) == 1
    assert "test_layer[extra-1x256x256@128x256-fwd-wcc]" in capsys.readouterr().out
    build_reports(paths[0], tmp_path / "reports", jobs=1)
    page = next((tmp_path / "reports").glob("*/index.html")).read_text()
    assert "pytest-benchmark records" in page


# ----------------------------------------------------------------------------- browser


def _browser_or_skip():
    """A headless Chromium (selenium + Debian's chromium / chromedriver). Missing pieces skip the
    test, except in CI (CI=true), where they fail it: .ci/run installs them."""
    why = None
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        why = "selenium is not installed (pip install -e .[test])"
    if why is None and not (chromium and driver):
        why = "chromium / chromedriver not found (apt-get install chromium chromium-driver)"
    if why is None:
        options = webdriver.ChromeOptions()
        options.binary_location = chromium
        profile = tempfile.mkdtemp(prefix="wcc-chromium-")
        for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-background-networking", "--disable-component-update", "--no-first-run",
                    "--allow-file-access-from-files", f"--user-data-dir={profile}", "--window-size=1300,900"):
            options.add_argument(arg)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        try:
            browser = webdriver.Chrome(options=options, service=Service(driver))
            browser.set_page_load_timeout(60)
            return browser, profile
        except Exception as exc:  # noqa: BLE001 - any start failure is the reason to report
            shutil.rmtree(profile, ignore_errors=True)
            why = f"Chromium did not start: {type(exc).__name__}: {str(exc).strip()[:300]}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true but the browser test cannot run: {why}")
    pytest.skip(why)


def test_pages_render_in_headless_chromium(reports):
    out, labels, _ = reports
    browser, profile = _browser_or_skip()
    try:
        for page in (out / "index.html", out / labels[SLOW_VERSION] / "index.html", out / labels[-1] / "index.html"):
            browser.get(page.resolve().as_uri())
            assert browser.execute_script("return document.readyState") == "complete"
            images = browser.execute_script(
                "return Array.from(document.images).map(i => [i.getAttribute('src'), i.complete, i.naturalWidth])")
            broken = [src for src, complete, width in images if not (complete and width > 0)]
            assert not broken, f"{page}: images that did not load: {broken}"
            tables = browser.execute_script("return document.querySelectorAll('table.data').length")
            errors = [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
            assert not errors, f"{page}: console errors: {errors}"
            if page.parent == out:
                assert tables == 1 and not images
                assert browser.execute_script("return document.querySelectorAll('tbody tr').length") == VERSIONS
            else:
                assert len(images) >= 6 and tables >= 5
                heads = browser.execute_script(
                    "return Array.from(document.querySelectorAll('h2')).map(h => h.textContent.trim())")
                assert {"Regressions", "Published vs measured tables", "Environment"} <= set(heads)
    finally:
        browser.quit()
        shutil.rmtree(profile, ignore_errors=True)


# ----------------------------------------------------------------------------- scale


@pytest.mark.slow
def test_ten_versions_of_full_results(tmp_path: Path):
    """Ten versions of full grids (CPU float32, GPU float16 + bfloat16; about 10k timed rows per
    version, 20 samples each) with a 20% slowdown injected in version 6: exactly those rows (and
    the accuracy drop) are flagged. Prints the build time; not asserted (timings do not belong in
    unit tests)."""
    from bench.report.build import build_reports

    inject = Injected(version=6, machine="cpu", slowdown=1.2, layer_match=_slow_rows, miou_drop=0.03)
    labels = write_history(tmp_path / "results", versions=10, full=True, inject=inject, validate="first")
    t0 = time.perf_counter()
    summary = build_reports(tmp_path / "results", tmp_path / "reports")
    elapsed = time.perf_counter() - t0
    print(f"\n10 versions of full results ({len(MACHINES)} machines) built in {elapsed:.1f} s")
    slow_rows = 58 * 2 * 3  # every shape, both directions, J = 1..3 of wcc[cpu k=0.25]
    assert summary.regressions == {v: (slow_rows + 1 if i == 6 else 0) for i, v in enumerate(labels)}


def test_accuracy_table_shows_drops_against_each_tables_own_fp32_row():
    from bench.report.sections import accuracy_table, table_start

    group = pd.DataFrame({
        "table": ["cityscapes"] * 3, "precision": ["FP32", "8/8", "8/8"], "shrinkage": ["---", "---", "25%"],
        "bops_paper": [36377.0, 2273.0, 673.0], "bops": [36000.0, 2250.0, 680.0],
        "metrics_paper": [{"miou": 0.717}, {"miou": 0.701}, {"miou": 0.620}],
        "metrics": [{"miou": 0.650}, {"miou": 0.640}, {"miou": 0.500}],
        "init_checkpoint": [{"path": "best.pth", "sha256": "ab" * 32}] * 3,
        "pretrained_backbone": [None] * 3, "procedure": ["staged"] * 3,
    })
    html = accuracy_table(group, "t")
    assert "mIoU drop vs FP32 published" in html and "mIoU drop vs FP32 measured" in html
    for value in ("-0.016", "-0.097", "-0.010", "-0.150", "+0.000"):  # published / measured drops, FP32 itself
        assert value in html, value
    assert table_start(group) == f"FP32 = checkpoint best.pth (sha256 {'ab' * 6}), evaluated as it is"
    group = group.drop(columns=["init_checkpoint"])
    assert table_start(group) == "FP32 trained from random initialization"


def test_calibration_file_records_its_setting(tmp_path: Path) -> None:
    from bench.report.calibration import GATE_SETTING, load_calibration, write_calibration

    path = tmp_path / "cal.json"
    write_calibration("m1", 0.05, sessions=2, rows=18, path=path, setting=("timing", "2"))
    write_calibration("m2", 0.04, sessions=2, rows=18, path=path)
    assert load_calibration(path) == {"m1": (0.05, ("timing", "2")), "m2": (0.04, GATE_SETTING)}
    # An entry written before settings were recorded was the gate check's: its setting.
    data = json.loads(path.read_text())
    del data["machines"]["m1"]["setting"]
    path.write_text(json.dumps(data))
    assert load_calibration(path)["m1"] == (0.05, GATE_SETTING)
    data["machines"]["m1"]["setting"] = {"source": "timing"}
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="bad setting"):
        load_calibration(path)
