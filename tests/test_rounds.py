"""Rounds (bench.timing.rounds), ``bench ab``'s argument checks and the gate check's planted slowdown:
the pieces that need no benchmark run."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.cli import main as bench_main
from bench.store import validate
from bench.timing.rounds import child_argv, merge_rounds, rotate_groups

FIXTURE = Path(__file__).resolve().parents[1] / "results" / "timing" / "cpu-quick-20261202T033734Z.json"


def test_rotate_groups_keeps_groups_whole_and_starts_each_round_elsewhere() -> None:
    items = ["a1", "a2", "b1", "c1", "c2", "c3"]
    key = lambda s: s[0]  # noqa: E731
    assert rotate_groups(items, key, 0) == items
    assert rotate_groups(items, key, 1) == ["b1", "c1", "c2", "c3", "a1", "a2"]
    assert rotate_groups(items, key, 2) == ["c1", "c2", "c3", "a1", "a2", "b1"]
    assert rotate_groups(items, key, 3) == items
    assert rotate_groups([], key, 5) == []


def test_child_argv_drops_what_each_round_sets_itself() -> None:
    argv = ["--device", "cpu", "--quick", "--rounds", "3", "--out=res", "--name", "x", "--no-progress", "--levels", "3"]
    assert child_argv(argv) == ["--device", "cpu", "--quick", "--levels", "3"]


def test_merge_rounds_keeps_each_rounds_summary_and_validates() -> None:
    record = json.loads(FIXTURE.read_text())
    rounds = []
    for scale in (1.0, 1.2, 0.9):
        rec = json.loads(json.dumps(record))
        for row in rec["layer_rows"] + rec["model_rows"]:
            if row["median_s"] is not None:
                row["median_s"] *= scale
                row["samples"] = [s * scale for s in row["samples"]]
        rounds.append(rec)
    rounds[2]["layer_rows"] = rounds[2]["layer_rows"][1:]  # a row missing from a round: one round fewer
    merged = merge_rounds(rounds, "s1")
    validate("timing", merged)
    assert merged["rounds"] == 3 and merged["session"] == "s1"
    first, second = merged["layer_rows"][0], merged["layer_rows"][1]
    base = record["layer_rows"][1]["median_s"]
    assert [r["median_s"] for r in second["rounds"]] == pytest.approx([base, base * 1.2, base * 0.9])
    assert second["median_s"] == pytest.approx(base)  # the median of the round medians
    assert len(first["rounds"]) == 2
    assert second["n_samples"] == sum(r["n_samples"] for r in second["rounds"])


def test_old_records_load_as_one_round_each() -> None:
    from bench.report.load import load_results
    from bench.report.regressions import measurements

    meas = measurements(load_results(FIXTURE))
    timed = meas[(meas["rule"] == "timing") & meas["error"].isna()]
    assert len(timed) and all(len(r) == 1 for r in timed["rounds"]) and timed["session"].isna().all()


def test_timing_rounds_flag_is_checked_before_any_work(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_main(["timing", "--device", "cpu", "--quick", "--rounds", "1", "--out", "unused"]) == 2
    assert "--rounds must be >= 2" in capsys.readouterr().err


def test_ab_arguments_are_checked_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = bench_main(["ab", "no-such-revision-xyz", "HEAD", "--rounds", "1", "--threads", "-1",
                     "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and "--rounds must be >= 2" in err and "--threads must be >= 0" in err
    assert "BASE 'no-such-revision-xyz': not a revision" in err
    assert not (tmp_path / "o").exists()


def test_planted_slowdown_is_real_and_only_in_its_entry_point() -> None:
    """bench.timing._planted makes the cpu backend's wcc_conv slower by doing work in the call;
    importing bench.timing (as bench timing does) plants nothing."""
    code = (
        "import time, torch, bench.timing.cli\n"
        "from wcc.backends.cpu import CPUBackend\n"
        "orig = CPUBackend.wcc_conv\n"
        "from bench.timing._planted import plant\n"
        "calls = []\n"
        "def fake(self, *a, **k):\n"
        "    t = time.perf_counter()\n"
        "    while time.perf_counter() - t < 0.02: pass\n"
        "CPUBackend.wcc_conv = fake\n"
        "plant(1.5)\n"
        "t = time.perf_counter(); CPUBackend.wcc_conv(None); print(time.perf_counter() - t)\n"
    )
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert time.perf_counter() - t0 < 60
    assert float(out.stdout.strip()) >= 0.029  # 0.02 s of work, then half as much again


def test_process_clock_leaves_out_time_spent_off_the_cpu() -> None:
    """``clock="process"`` (bench ab's rounds) counts this process's CPU time: a call that sleeps
    (as a descheduled one waits) costs next to nothing in it, and its full length on the wall."""
    from bench.timing.harness import time_callable

    nap = lambda: time.sleep(0.02)  # noqa: E731
    kw = {"warmup": 1, "min_samples": 3, "max_samples": 3, "budget_s": 0.0}
    assert time_callable(nap, "cpu", clock="wall", **kw).median >= 0.02
    assert time_callable(nap, "cpu", clock="process", **kw).median < 0.01
    with pytest.raises(ValueError, match="clock must be one of"):
        time_callable(nap, "cpu", clock="cycles")
