"""``python -m bench report``: versioned HTML reports from the results store.

    python -m bench report --results results --out reports
    python -m bench report --results results --out reports --version 0.1.0+1a2b3c4d

Writes ``<out>/<version>/index.html`` (figures in ``<out>/<version>/img/``) for every version
found in the results, and ``<out>/index.html`` listing them. Static files: open them from disk.
Exit status: 0 when built, 2 when the results cannot be read.
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["configure", "run"]


def add_rule_options(parser: argparse.ArgumentParser) -> None:
    """``--factor``, ``--alpha``, ``--memory-factor``, ``--calibration``, ``--no-drift-check`` (shared with
    ``compare`` and ``ab``)."""
    g = parser.add_argument_group("regression rules")
    g.add_argument("--factor", type=float, default=1.1,
                   help="timing: flag when the rounds' medians moved by more than this factor (default 1.1) ...")
    g.add_argument("--alpha", type=float, default=0.01,
                   help="... and their test of no change is a discovery at this level (Benjamini-Hochberg step-up over "
                        "the rows compared; default 0.01); the band between rounds is the row's own interval at "
                        "this level")
    g.add_argument("--memory-factor", type=float, default=1.1, help="memory: flag above this factor (default 1.1)")
    g.add_argument("--calibration", metavar="FILE",
                   help="this machine's run-to-run noise, for records taken in separate sessions (default: "
                        "$WCC_BENCH_CALIBRATION or ~/.cache/wcc-bench/run-to-run.json where present; nox -s gate_check "
                        "writes it); without one, separate records past the factor are inconclusive")
    g.add_argument("--no-drift-check", dest="drift_check", action="store_false",
                   help="judge WCC / QuantConv2d layer times alone (default: they must also have moved relative to "
                        "the best dense op of the same shape in the same runs, so a machine that got slower between "
                        "two runs does not read as a WCC regression)")


def rules_from(args: argparse.Namespace):  # -> Rules (imported lazily)
    from bench.report.calibration import load_calibration
    from bench.report.regressions import Rules

    calibration = load_calibration(getattr(args, "calibration", None))
    return Rules(factor=args.factor, alpha=args.alpha, memory_factor=args.memory_factor,
                 drift_check=args.drift_check, run_to_run_sd={m: sd for m, (sd, _) in calibration.items()},
                 calibrated_setting={m: setting for m, (_, setting) in calibration.items()})


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--results", nargs="+", default=["results"], metavar="PATH",
                        help="results directories or record files (default: results)")
    parser.add_argument("--out", default="reports", help="output folder (default: reports)")
    parser.add_argument("--version", action="append", dest="versions", metavar="VERSION",
                        help="build only this version's report (repeatable; the index always lists all)")
    parser.add_argument("--validate", action="store_true",
                        help="make an invalid record an error (exit 2); without it, invalid records are skipped "
                             "with a warning on the index page (every record is validated either way)")
    parser.add_argument("--jobs", type=int, help="worker processes building versions (default: one per CPU)")
    parser.add_argument("--force", action="store_true",
                        help="rebuild every version (default: skip versions whose records, earlier records, rules "
                             "and report code are unchanged since their last build)")
    parser.add_argument("--quiet", action="store_true", help="print only the summary line")
    add_rule_options(parser)
    parser.epilog = ("Writes OUT/<version>/index.html (figures in OUT/<version>/img/) and OUT/index.html; static "
                     "files that open from disk. Exit status: 0 when built, 2 when the results cannot be read.")


def rule_errors(args: argparse.Namespace) -> list[str | None]:
    """The regression-rule flags' problems (shared with ``compare``)."""
    try:
        rules_from(args)
    except ValueError as exc:
        return [f"--factor/--alpha/--memory-factor/--calibration: {exc}"]
    return []


def check_args(args: argparse.Namespace) -> list[str | None]:
    """Every argument's problem, found before any record is read or any page written."""
    from bench._args import existing_path, int_at_least, writable_dir
    from bench.store import check_record_name

    errors = [existing_path("--results", p) for p in args.results]
    errors += [writable_dir("--out", args.out), int_at_least("--jobs", args.jobs, 1), *rule_errors(args)]
    for v in args.versions or ():
        try:  # a version becomes the folder OUT/<version>: no path separators, no '..'
            check_record_name(v)
        except ValueError:
            errors.append(f"--version {v!r}: not a version name (letters, digits and . _ + -, as the index lists "
                          f"them, e.g. 0.1.0+1a2b3c4d)")
    return errors


def run(args: argparse.Namespace) -> int:
    from bench._args import report_errors
    from bench.report.build import build_reports
    from bench.report.load import LoadError

    if report_errors("python -m bench report", check_args(args)):  # before any record is read
        return 2
    rules = rules_from(args)
    log = None if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    try:
        summary = build_reports(args.results, args.out, rules=rules, versions=args.versions, validate=args.validate,
                                log=log, jobs=args.jobs, force=args.force)
    except LoadError as exc:
        print(f"python -m bench report: {exc}", file=sys.stderr)
        return 2
    bad = {v: n for v, n in summary.regressions.items() if n}
    fresh = len(summary.versions) - len(summary.skipped)
    print(f"wrote {summary.out / 'index.html'}: {fresh} version report(s) built, {len(summary.skipped)} up to date, "
          f"in {summary.seconds:.1f} s; "
          + (f"regressions in {', '.join(f'{v} ({n})' for v, n in bad.items())}" if bad else "no regressions"))
    return 0
