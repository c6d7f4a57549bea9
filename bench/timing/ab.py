"""``python -m bench ab BASE NEW``: two git revisions timed against each other, rounds interleaved.

    python -m bench ab main HEAD --device cpu --quick
    python -m bench ab v0.1.0 my-branch --rounds 7 --out ab-results

Each revision is checked out into a temporary worktree (``git worktree add --detach``) and its
compiled backend built once (the build is cached by source hash, so two revisions with the same
kernels share it). Then the rounds run alternately, A B A B ..., each a fresh ``python -m bench
timing`` process of that revision's code, on one torch thread in CPU time (``--clock process``,
as asv: another tenant's time slices do not count) where both revisions have that clock: the
machine's drift over the session hits both sides alike, so the two records share a *session*
and the verdict (:mod:`bench.report.verdict`) needs no run-to-run calibration. The two merged
records are written to ``--out`` (``bench compare`` reads them again) and the table is ``bench
compare``'s.

``--quick`` times ``bench timing --quick``'s forward layer rows, without the model and the
deployed runtimes (neither changes with this repository's code, and they take most of a quick
run); the default is the full grid. Either way :data:`bench.timing.rounds.AB_ROUNDS` rounds per
side: the round is the unit of replication, and the count is what a 1.3x change needs on a noisy
2-core machine. Exit status: 1 when a row regressed, 0
otherwise (inconclusive rows never fail), 2 on bad arguments or when a revision cannot run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["configure", "run", "round_argv"]


def configure(parser: argparse.ArgumentParser) -> None:
    from bench.report.cli import add_rule_options

    parser.add_argument("base", metavar="BASE", help="the baseline revision (anything git rev-parse takes: main, "
                                                     "HEAD~1, a tag, a commit)")
    parser.add_argument("new", metavar="NEW", help="the revision to judge")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where to time (default cpu)")
    parser.add_argument("--quick", action="store_true",
                        help="the quick grid's forward layer rows (no model, no deployed runtimes), fewer rounds: a "
                             "few minutes")
    parser.add_argument("--rounds", type=int, metavar="N",
                        help="rounds per revision, alternated A B A B (default 10; at least 2)")
    parser.add_argument("--threads", type=int, default=1, metavar="N",
                        help="torch threads in each round (default 1, as asv: on a shared machine another tenant then "
                             "delays one round instead of every parallel region; 0: torch's default)")
    parser.add_argument("--out", default="ab-results", metavar="DIR",
                        help="results store for the two merged timing records (default: ab-results)")
    parser.add_argument("--brief", action="store_true", help="count the unchanged and inconclusive rows only")
    parser.add_argument("--keep-worktrees", action="store_true", help="leave the temporary worktrees (debugging)")
    add_rule_options(parser)
    parser.epilog = ("Use it to judge a change before merging; use asv continuous for per-commit history. Exit "
                     "status: 1 when a row regressed, 0 otherwise, 2 on bad arguments or a revision that cannot run.")


def _git(*args: str, cwd: str | os.PathLike[str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _repo_root() -> Path | None:
    here = Path(__file__).resolve().parents[2]
    proc = _git("rev-parse", "--show-toplevel", cwd=here)
    return Path(proc.stdout.strip()) if proc.returncode == 0 else None


def _resolve(root: Path, rev: str) -> str | None:
    proc = _git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}", cwd=root)
    return proc.stdout.strip() if proc.returncode == 0 else None


def _check_args(args: argparse.Namespace, root: Path | None) -> list[str | None]:
    from bench._args import int_at_least, writable_dir
    from bench.report.cli import rule_errors

    errors: list[str | None] = [int_at_least("--rounds", args.rounds, 2), writable_dir("--out", args.out),
                                int_at_least("--threads", args.threads, 0), *rule_errors(args)]
    if shutil.which("git") is None:
        return [*errors, "git is not on PATH: bench ab checks the revisions out with git worktree"]
    if root is None:
        return [*errors, "this copy of bench is not in a git repository: bench ab needs one to check revisions out"]
    for name, rev in (("BASE", args.base), ("NEW", args.new)):
        if _resolve(root, rev) is None:
            errors.append(f"{name} {rev!r}: not a revision of {root} (give a branch, tag or commit)")
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            errors.append("--device cuda: no CUDA device here; use --device cpu")
    return errors


def _build(tree: Path, device: str, env: dict[str, str]) -> str | None:
    """Build the revision's compiled backend once (cached by source hash); a failure is reported,
    not fatal: that revision's WCC rows then record why they could not run."""
    module = "cuda_build" if device == "cuda" else "cpu_build"
    if not (tree / "wcc" / "backends" / f"{module}.py").is_file():
        return None
    proc = subprocess.run([sys.executable, "-m", f"wcc.backends.{module}", "--quiet"], cwd=tree, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return None if proc.returncode == 0 else "\n".join(proc.stdout.splitlines()[-5:])


def _has_process_clock(tree: Path) -> bool:
    cli = tree / "bench" / "timing" / "cli.py"
    return cli.is_file() and '"--clock"' in cli.read_text(encoding="utf-8")


def round_argv(*, device: str, quick: bool, threads: int, process_clock: bool) -> list[str]:
    """The ``bench timing`` flags of one ``bench ab`` round (without ``--one-round``/``--rotate``);
    the gate check (:mod:`bench.timing.gate_check`) times the same rounds."""
    argv = ["--device", device, "--no-peaks"] + (["--threads", str(threads)] if threads else [])
    if process_clock:
        argv += ["--clock", "process"]
    if quick:
        argv += ["--quick", "--no-runtimes", "--no-model", "--directions", "fwd"]
    return argv


def _timing_argv(args: argparse.Namespace, tree: Path, round_index: int, process_clock: bool) -> list[str]:
    argv = round_argv(device=args.device, quick=args.quick, threads=args.threads, process_clock=process_clock)
    if (tree / "bench" / "timing" / "rounds.py").is_file():  # a revision with rounds: one round per process
        argv += ["--one-round", "--rotate", str(round_index)]
    return argv


def run(args: argparse.Namespace) -> int:
    from bench._args import report_errors
    from bench.report.cli import rules_from
    from bench.report.compare import print_verdicts
    from bench.report.format import short_machine_names
    from bench.report.load import load_results
    from bench.report.regressions import compare, measurements
    from bench.store import ResultStore
    from bench.timing.rounds import AB_ROUNDS, merge_rounds, new_session, run_round

    root = _repo_root()
    if report_errors("python -m bench ab", _check_args(args, root)):
        return 2
    assert root is not None  # _check_args said so
    rules = rules_from(args)
    n = args.rounds or AB_ROUNDS
    shas = {"base": _resolve(root, args.base) or "", "new": _resolve(root, args.new) or ""}
    start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="wcc-ab-"))
    trees = {side: tmp / side for side in ("base", "new")}
    log = lambda msg: print(f"[ab {time.perf_counter() - start:5.0f} s] {msg}", file=sys.stderr, flush=True)  # noqa: E731
    try:
        envs = {}
        for side, tree in trees.items():
            proc = _git("worktree", "add", "--detach", str(tree), shas[side], cwd=root)
            if proc.returncode != 0:
                print(f"python -m bench ab: git worktree add {shas[side][:10]} failed: {proc.stderr.strip()}",
                      file=sys.stderr)
                return 2
            # Each side builds into its own cache inside the session's folder: the shared cache
            # (~/.cache/wcc) is keyed by the kernels' source, but its build files name the source
            # path, so a worktree would rebuild there under the lock other processes load from.
            envs[side] = {**os.environ, "PYTHONPATH": os.pathsep.join(
                [str(tree), *filter(None, [os.environ.get("PYTHONPATH")])]),
                "WCC_CPU_CACHE": str(tmp / f"cache-{side}"), "WCC_CUDA_CACHE": str(tmp / f"cache-{side}-cuda")}
            log(f"{side}: {shas[side][:10]} in {tree}; building")
            failed = _build(tree, args.device, envs[side])
            if failed:
                log(f"{side}: the {args.device} backend did not build (its WCC rows will say why):\n{failed}")
        # CPU time on one thread, as asv (another tenant's time slices do not count), where both
        # revisions can; otherwise both sides use the wall clock, so they stay comparable.
        process_clock = args.device == "cpu" and args.threads == 1 and all(map(_has_process_clock, trees.values()))
        log(f"clock: {'process (CPU time)' if process_clock else 'wall'}")
        rounds: dict[str, list[dict[str, Any]]] = {"base": [], "new": []}
        for i in range(n):
            for side in ("base", "new"):  # A B A B ...: drift over the session hits both alike
                try:
                    rounds[side].append(run_round(_timing_argv(args, trees[side], i, process_clock), cwd=trees[side],
                                                  env=envs[side]))
                except RuntimeError as exc:
                    print(f"python -m bench ab: {side} ({args.base if side == 'base' else args.new}) {exc}",
                          file=sys.stderr)
                    return 2
                log(f"round {i + 1}/{n} {side} done")
        session = new_session()
        store = ResultStore(args.out)
        paths = {}
        for side in ("base", "new"):
            record = merge_rounds(rounds[side], session)
            record["name"] = f"ab-{session}-{side}-{shas[side][:8]}"
            paths[side] = store.write("timing", record["name"], record)
    finally:
        if not args.keep_worktrees:
            for tree in trees.values():
                if tree.exists():
                    _git("worktree", "remove", "--force", str(tree), cwd=root)
            shutil.rmtree(tmp, ignore_errors=True)
            _git("worktree", "prune", cwd=root)
    base, new = load_results(paths["base"]), load_results(paths["new"])
    result = compare(measurements(base, rules), measurements(new, rules), rules)
    print(f"BASE: {args.base} ({shas['base'][:10]}), {n} rounds: {paths['base']}")
    print(f"NEW : {args.new} ({shas['new'][:10]}), {n} rounds: {paths['new']}")
    print(f"rounds alternated A B A B in one session ({session}); wall time {time.perf_counter() - start:.0f} s")
    if not len(result):
        print("python -m bench ab: nothing to compare - the two revisions timed no common row", file=sys.stderr)
        return 2
    return print_verdicts(result, short_machine_names({**base.machines, **new.machines}), brief=args.brief)
