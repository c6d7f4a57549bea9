"""``python -m bench.timing.gate_check``: the regression gate's own rates on this machine (``nox -s gate_check``).

Runs ``--pairs`` K sessions. In each, three sides' rounds alternate (A B C A B C ...), each round a
fresh ``bench timing`` process of the forward layer rows of the quick grid: A and B are this code
as it is, C is the same code with the WCC cpu forward made ``--slowdown`` (1.3) times slower for
real (:mod:`bench.timing._planted`). A against B is an A/A pair, A against C a planted pair, both
judged by the one gate (:func:`bench.report.regressions.compare`, the rules of ``bench compare``
and ``bench ab``). It prints:

* false alarms: A/A pairs with any row regressed, and the share of rows regressed;
* detection: the share of WCC cpu rows regressed in the planted pairs, the pairs in which every
  one was, and any dense row regressed there (which would be a false alarm).

Exit status 0 (it measures; it does not judge), 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import numpy as np

__all__ = ["main", "tally_planted"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.timing.gate_check", description=__doc__.split("\n")[0])
    p.add_argument("--pairs", type=int, default=5,
                   help="sessions, each giving one A/A and one planted pair (default 5)")
    p.add_argument("--rounds", type=int, help="rounds per side (default: bench ab --quick's)")
    p.add_argument("--slowdown", type=float, default=1.3, help="the planted slowdown of the WCC cpu forward (1.3)")
    p.add_argument("--factor", type=float, default=1.1, help="the gate's factor (default 1.1, as bench compare)")
    p.add_argument("--alpha", type=float, default=0.01, help="the gate's alpha (default 0.01, as bench compare)")
    p.add_argument("--no-calibrate", action="store_true",
                   help="do not store the run-to-run noise measured between the sessions (bench.report.calibration)")
    return p


def _frame(record: dict[str, Any]) -> Any:
    import tempfile
    from pathlib import Path

    from bench.report.load import load_results
    from bench.report.regressions import measurements
    from bench.store import ResultStore

    with tempfile.TemporaryDirectory() as tmp:
        path = ResultStore(Path(tmp)).write("timing", record["name"], record)
        return measurements(load_results(path))


def main(argv: list[str] | None = None) -> int:
    from bench.report.regressions import Rules, compare
    from bench.timing.ab import round_argv
    from bench.timing.rounds import AB_ROUNDS, MIN_ROUNDS, merge_rounds, new_session, run_round

    args = _parser().parse_args(argv)
    rounds = args.rounds or AB_ROUNDS
    errors = [m for bad, m in ((args.pairs < 1, f"--pairs must be >= 1, got {args.pairs}"),
                               (rounds < MIN_ROUNDS, f"--rounds must be >= {MIN_ROUNDS}, got {rounds}"),
                               (not args.slowdown > 1, f"--slowdown must be > 1, got {args.slowdown}")) if bad]
    try:
        rules = Rules(factor=args.factor, alpha=args.alpha)
    except ValueError as exc:
        errors.append(f"--factor/--alpha: {exc}")
    if errors:
        for m in errors:
            print(f"python -m bench.timing.gate_check: {m}", file=sys.stderr)
        return 2
    # bench ab --quick's rounds (one thread, CPU time), on the cpu backend whose forward is planted.
    argv_round = [*round_argv(device="cpu", quick=True, threads=1, process_clock=True), "--backends", "cpu",
                  "--one-round"]
    planted = ("-m", "bench.timing._planted", f"{args.slowdown}")
    start = time.perf_counter()
    aa_any = aa_rows = aa_total = 0
    det_rows = det_total = det_all = dense_bad = 0
    side_a: list[Any] = []  # each session's A side: the run-to-run noise is its spread between sessions
    for k in range(args.pairs):
        sides: dict[str, list[dict[str, Any]]] = {"A": [], "B": [], "C": []}
        for i in range(rounds):
            for side in ("A", "B", "C"):
                entry = planted if side == "C" else ("-m", "bench")
                sides[side].append(run_round([*argv_round, "--rotate", str(i)], entry=entry))
        session = new_session()
        frames = {}
        for side, recs in sides.items():
            rec = merge_rounds(recs, session)
            rec["name"] = f"gate-{session}-{side}"
            frames[side] = _frame(rec)
        side_a.append(frames["A"])
        aa = compare(frames["A"], frames["B"], rules)
        aa = aa[aa["rule"] == "timing"]
        bad = int((aa["status"] == "regressed").sum())
        aa_any += bad > 0
        aa_rows += bad
        aa_total += len(aa)
        hit, wcc, others = tally_planted(compare(frames["A"], frames["C"], rules))
        det_rows += hit
        det_total += len(wcc)
        det_all += hit == len(wcc)
        dense_bad += others
        print(f"[gate_check {time.perf_counter() - start:5.0f} s] session {k + 1}/{args.pairs}: A/A {bad} of "
              f"{len(aa)} rows regressed ({int((aa['status'] == 'inconclusive').sum())} inconclusive); planted "
              f"x{args.slowdown:g}: {hit} of {len(wcc)} WCC cpu rows regressed (changes "
              f"{', '.join(f'x{c:.2f}' for c in wcc['change'])}), other rows regressed {dense_bad}", flush=True)
    n = args.pairs
    print(f"\ngate_check on this machine: {n} sessions, {rounds} rounds per side, factor x{args.factor:g}, "
          f"alpha {args.alpha:g}, {time.perf_counter() - start:.0f} s")
    print(f"  false alarms: {aa_any} of {n} A/A pairs had a row regressed ({aa_rows} of {aa_total} rows)")
    print(f"  detection of a planted x{args.slowdown:g} WCC cpu forward: {det_rows} of {det_total} rows "
          f"({det_rows / max(1, det_total):.0%}); every WCC row caught in {det_all} of {n} pairs; other rows "
          f"regressed in the planted pairs: {dense_bad}")
    if not args.no_calibrate and len(side_a) >= 2:
        _calibrate(side_a, sides["A"][0]["environment"])
    return 0


def tally_planted(result: Any) -> tuple[int, Any, int]:
    """From a planted pair's ``compare`` frame: (WCC rows regressed, the WCC timing rows, other
    timing rows regressed - false alarms, since only the WCC forward was slowed)."""
    timed = result[result["rule"] == "timing"]
    is_wcc = np.asarray([getattr(key, "op", None) == "wcc" for key in timed["key"]], dtype=bool)
    regressed = (timed["status"] == "regressed").to_numpy()
    wcc = timed[is_wcc]
    return int(regressed[is_wcc].sum()), wcc, int(regressed[~is_wcc].sum())


def _calibrate(frames: list[Any], environment: dict[str, Any]) -> None:
    """Store the run-to-run sd: per row, the sd over sessions of the side's mean log round median
    (what bench.report.verdict compares between separately taken records); the median over rows."""
    from bench.report.calibration import write_calibration
    from bench.report.load import machine_of
    from bench.report.verdict import log_rounds

    per_row: dict[Any, list[float]] = {}
    for frame in frames:
        timed = frame[(frame["rule"] == "timing") & frame["error"].isna()]
        for key, rounds in zip(timed["key"], timed["rounds"]):
            logs = log_rounds(rounds or [])
            if len(logs):
                per_row.setdefault(key, []).append(float(logs.mean()))
    variances = [float(np.var(v, ddof=1)) for v in per_row.values() if len(v) >= 2]
    if not variances:
        return
    sd = float(np.sqrt(np.median(variances)))
    machine, label = machine_of(environment)
    key = next(iter(per_row))
    setting = (str(key.source), str(key.threads))
    path = write_calibration(machine, sd, sessions=len(frames), rows=len(variances), label=label, setting=setting)
    print(f"  run-to-run sd between sessions: {sd:.3f} (log time; median over {len(variances)} rows) -> {path}; "
          f"bench compare / report judge separately taken records on this machine timed the same way "
          f"({setting[0]}, {setting[1]} thread(s)) with it")


if __name__ == "__main__":
    sys.exit(main())
