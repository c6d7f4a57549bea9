"""``python -m bench compare BASE NEW``: improved / regressed / unchanged, per machine and configuration.

Two forms::

    python -m bench compare results-old/ results-new/          # paths: record files or results dirs
    python -m bench compare --results results 0.1.0+1a2b 0.1.0+3c4d   # two versions inside one dir

* Paths: BASE and NEW are each a record file (``timing``, ``tables`` or ``pytest-benchmark``
  JSON) or a directory of records (a results root or one kind's folder). When a side holds
  several measurements of the same thing, its newest record wins.
* ``--results DIR``: BASE and NEW name versions found in DIR (``<package version>+<commit[:8]>``
  as the reports show them); a unique prefix of a version or of a commit also works.

Only measurements of the same machine and configuration are paired (:mod:`bench.report.regressions`
states the rules). Exit status: 1 when anything regressed, 0 otherwise, 2 on bad input or when
nothing at all could be paired (a comparison that compares nothing must not pass silently).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

__all__ = ["configure", "run", "print_verdicts"]


def configure(parser: argparse.ArgumentParser) -> None:
    from bench.report.cli import add_rule_options

    parser.add_argument("base", metavar="BASE", help="baseline: a record file, a results directory, or a version "
                                                     "(with --results)")
    parser.add_argument("new", metavar="NEW", help="the results to judge, same forms as BASE")
    parser.add_argument("--results", metavar="DIR", help="BASE and NEW are versions inside this results directory")
    parser.add_argument("--brief", action="store_true", help="count the unchanged rows instead of listing them")
    parser.add_argument("--validate", action="store_true",
                        help="accepted for compatibility: every record is validated against its schema, and an invalid "
                             "one always exits 2")
    add_rule_options(parser)
    parser.epilog = ("Only measurements of the same machine and configuration are paired. Exit status: 1 when "
                     "anything regressed, 0 otherwise, 2 on bad input or when nothing could be paired.")


class _BadInput(Exception):
    pass


def _pick_version(order: list[str], commits: dict[str, str | None], spec: str, results: str) -> str:
    if spec in order:
        return spec
    hits = [v for v in order if v.startswith(spec) or (commits.get(v) or "").startswith(spec)
            or v.split("+", 1)[-1].startswith(spec)]
    if len(hits) == 1:
        return hits[0]
    what = "matches several versions: " + ", ".join(hits) if hits else "matches no version"
    raise _BadInput(f"{spec!r} {what} in {results}; versions there: {', '.join(order) or 'none'}")


def _sides(args: argparse.Namespace) -> tuple[Any, Any, str, str]:
    """(base Results, new Results, base description, new description)."""
    from bench.report.load import LoadError, load_results

    try:
        if args.results:
            results = load_results(args.results, validate=args.validate)
            order = results.version_order
            commits = dict(zip(results.versions["version"], results.versions["commit"]))
            base_v = _pick_version(order, commits, args.base, args.results)
            new_v = _pick_version(order, commits, args.new, args.results)
            return (results.select_versions([base_v]), results.select_versions([new_v]),
                    f"version {base_v}", f"version {new_v}")
        for p in (args.base, args.new):
            if not Path(p).exists():
                hint = " (to compare versions, add --results DIR)" if not Path(p).suffix else ""
                raise _BadInput(f"{p}: no such file or directory{hint}")
        return (load_results(args.base, validate=args.validate), load_results(args.new, validate=args.validate),
                args.base, args.new)
    except LoadError as exc:
        raise _BadInput(str(exc)) from None


def _check_args(args: argparse.Namespace) -> list[str | None]:
    """Every argument's problem, found before any record is read."""
    from bench._args import existing_path
    from bench.report.cli import rule_errors

    if args.results:
        errors = [existing_path("--results", args.results)]
        if not errors[0] and not Path(args.results).is_dir():
            errors = [f"--results {args.results}: not a folder; give the results folder holding both versions"]
    else:
        errors = [None if Path(p).exists() else
                  f"{name} {p}: no such file or directory" + (" (to compare versions, add --results DIR)"
                                                               if not Path(p).suffix else "")
                  for name, p in (("BASE", args.base), ("NEW", args.new))]
    return errors + rule_errors(args)


def _describe(name: str, res: Any) -> str:
    versions = ", ".join(res.version_order) or "none"
    machines = "; ".join(res.machines.get(m, m) for m in sorted(res.machines)) or "none"
    return f"{name}: {len(res.records)} records, versions {versions}, machines {machines}"


def run(args: argparse.Namespace) -> int:
    from bench._args import report_errors
    from bench.report.cli import rules_from
    from bench.report.format import short_machine_names
    from bench.report.regressions import compare, measurements, unmatched

    if report_errors("python -m bench compare", _check_args(args)):  # before any record is read
        return 2
    rules = rules_from(args)
    try:
        base, new, base_name, new_name = _sides(args)
    except (ValueError, _BadInput) as exc:
        print(f"python -m bench compare: {exc}", file=sys.stderr)
        return 2
    if not len(base.records) or not len(new.records):
        empty = base_name if not len(base.records) else new_name
        print(f"python -m bench compare: {empty} holds no results records", file=sys.stderr)
        return 2
    mb, mn = measurements(base, rules), measurements(new, rules)
    result = compare(mb, mn, rules)
    print(_describe("BASE", base))
    print(_describe("NEW ", new))
    if not len(result):
        print("python -m bench compare: nothing to compare - no measurement of the same machine and "
              "configuration is in both sides (results are compared only per machine and configuration)",
              file=sys.stderr)
        return 2
    names = short_machine_names({**base.machines, **new.machines})
    return print_verdicts(result, names, brief=args.brief, unmatched_counts=unmatched(mb, mn))


def print_verdicts(result: Any, names: dict[str, str], *, brief: bool = False,
                   unmatched_counts: tuple[int, int] | None = None) -> int:
    """Print a comparison (:func:`bench.report.regressions.compare`) as ``bench compare`` does and
    return its exit status: 1 when anything regressed, else 0 (inconclusive rows never fail).
    ``bench ab`` prints its verdicts through this too."""
    from tabulate import tabulate

    from bench.report.format import COMPARE_HEADERS, GROUP_HEADERS, compare_rows, group_rows
    from bench.report.regressions import group_summary

    headers = [h for h in COMPARE_HEADERS if h != "base version"]
    counts = {}
    for status in ("regressed", "improved", "inconclusive", "unchanged"):
        rows = result[result["status"] == status]
        counts[status] = len(rows)
        title = {"inconclusive": "INCONCLUSIVE: the band between rounds is wider than the factor (noise; not a "
                                 "verdict, never fails)"}.get(status, status.upper())
        print(f"\n{title} ({len(rows)})")
        if not len(rows) or (status in ("unchanged", "inconclusive") and brief):
            continue
        if status in ("regressed", "improved") and len(rows) > 1:
            print(tabulate(group_rows(group_summary(rows), names), headers=GROUP_HEADERS, tablefmt="simple",
                           disable_numparse=True) + "\n")
        text = [r[:4] + r[5:] for r in compare_rows(rows, names)]  # drop "base version": one per side here
        print(tabulate(text, headers=headers, tablefmt="simple", disable_numparse=True))
    paired = ""
    if unmatched_counts is not None:
        paired = f"; not paired: {unmatched_counts[0]} only in BASE, {unmatched_counts[1]} only in NEW"
    print(f"\n{counts['regressed']} regressed, {counts['improved']} improved, {counts['unchanged']} unchanged, "
          f"{counts['inconclusive']} inconclusive{paired}")
    return 1 if counts["regressed"] else 0
