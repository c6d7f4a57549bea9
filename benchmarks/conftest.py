"""pytest-benchmark suites of wcc-bench (``nox -s bench_cpu`` / ``nox -s bench_gpu``).

Not part of the default test run (``testpaths = ["tests"]``); run them explicitly::

    python -m pytest benchmarks --bench-device cpu --benchmark-json results/pytest-benchmark/NAME.json
    python -m pytest benchmarks --benchmark-autosave                       # save a baseline
    python -m pytest benchmarks --benchmark-compare --benchmark-compare-fail=median:10%

What this file adds to pytest-benchmark:

* ``--bench-device`` (cpu / cuda), ``--bench-full`` (the full layer grid instead of the quick
  one), ``--bench-rounds`` / ``--bench-warmup``;
* the device probes (:func:`bench.timing.probes.probe_all`, without the readings that change
  from run to run) in ``machine_info["wcc_probes"]`` through the
  ``pytest_benchmark_update_machine_info`` hook, and all of them in the JSON's ``environment``;
* in the JSON: ``ratio_to_dense`` in every benchmark's ``extra_info`` (its median over the best
  dense op of the same case), plus ``schema``/``created``/``environment``, so the file written by
  ``--benchmark-json`` is a valid record of the results store (validated before it is written);
* a WCC / dense ratio table at the end of the terminal report.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pytest
import torch

RATIOS = pytest.StashKey[list]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("wcc-bench")
    group.addoption("--bench-device", default="cpu", choices=("cpu", "cuda"), help="device to time on")
    group.addoption("--bench-full", action="store_true", help="the full layer grid (default: the quick one)")
    group.addoption("--bench-rounds", type=int, default=None, help="timed rounds per benchmark")
    group.addoption("--bench-warmup", type=int, default=2, help="untimed warm-up rounds per benchmark")


def pytest_configure(config: pytest.Config) -> None:
    config.stash[RATIOS] = []
    if config.getoption("--bench-device") == "cuda" and not torch.cuda.is_available():
        raise pytest.UsageError("--bench-device cuda: torch.cuda.is_available() is False on this machine")


@pytest.fixture(scope="session")
def bench_device(request: pytest.FixtureRequest) -> torch.device:
    return torch.device(request.config.getoption("--bench-device"))


@pytest.fixture(scope="session")
def bench_rounds(request: pytest.FixtureRequest, bench_device: torch.device) -> tuple[int, int]:
    """(rounds, warm-up rounds)."""
    rounds = request.config.getoption("--bench-rounds") or (10 if bench_device.type == "cpu" else 50)
    return rounds, request.config.getoption("--bench-warmup")


@pytest.fixture
def record_result(request: pytest.FixtureRequest) -> Any:
    """``record_result(extra_info, median_s)``: keep a finished benchmark for the ratio table."""
    def record(extra: dict[str, Any], median_s: float) -> None:
        request.config.stash[RATIOS].append({**extra, "median_s": median_s})
    return record


def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict[str, Any]) -> None:
    # The machine's identity only: pytest-benchmark warns when a baseline's machine_info differs,
    # so load, clocks and power readings go to the JSON's environment instead.
    from bench.timing.probes import probe_all, stable_probes

    machine_info["wcc_probes"] = stable_probes(probe_all(config.getoption("--bench-device")))


def add_benchmark_ratios(benchmarks: list[dict[str, Any]]) -> None:
    """Set ``extra_info["ratio_to_dense"]``: median over the fastest dense op of the same case."""
    from bench.timing.layer import DENSE_OPS

    best: dict[str, float] = {}
    for b in benchmarks:
        info = b["extra_info"]
        if info.get("op") in DENSE_OPS or info.get("op") == "dense":
            median = b["stats"]["median"]
            best[info["case"]] = min(best.get(info["case"], median), median)
    for b in benchmarks:
        ref = best.get(b["extra_info"].get("case"))
        b["extra_info"]["ratio_to_dense"] = b["stats"]["median"] / ref if ref else None


def pytest_benchmark_update_json(config: pytest.Config, benchmarks: list, output_json: dict[str, Any]) -> None:
    from bench.environment import environment
    from bench.store import schema_id, validate

    add_benchmark_ratios(output_json["benchmarks"])
    output_json["schema"] = schema_id("pytest-benchmark")
    output_json["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    from bench.timing.probes import probe_all

    env = environment()
    env["probes"] = probe_all(config.getoption("--bench-device"))
    output_json["environment"] = env
    validate("pytest-benchmark", output_json)


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    results = config.stash.get(RATIOS, [])
    if not results:
        return
    from tabulate import tabulate

    from bench.timing.layer import DENSE_OPS

    best: dict[str, dict[str, Any]] = {}
    for r in results:
        if r["op"] in DENSE_OPS or r["op"] == "dense":
            if r["case"] not in best or r["median_s"] < best[r["case"]]["median_s"]:
                best[r["case"]] = r
    rows = []
    for r in results:
        if r["op"] in DENSE_OPS or r["op"] == "dense":
            continue
        ref = best.get(r["case"])
        rows.append([r["case"], r.get("variant") or r["op"], r.get("backend") or "-",
                     "-" if ref is None else f"{ref['median_s'] * 1e3:.3g} ({ref['op']})",
                     f"{r['median_s'] * 1e3:.3g}", "-" if ref is None else f"{r['median_s'] / ref['median_s']:.2f}"])
    terminalreporter.write_sep("=", "WCC / dense median ratios (< 1 is faster than dense)")
    terminalreporter.write_line(tabulate(rows, headers=["case", "op", "backend", "best dense ms", "ms", "x dense"],
                                         disable_numparse=True))
