"""Rounds: the unit of replication of a timing (docs/design.md §7, ``bench/README.md``).

A round is one fresh ``python -m bench timing`` process that times every row once; the machine's
state (other tenants, the clock, the page cache, thread placement) holds for a whole process, so
its samples say little about the next process and the verdict (:mod:`bench.report.verdict`) is
computed on round medians. ``bench timing --rounds N`` runs N rounds, each with the row order
rotated (:func:`rotate_groups`), and merges them (:func:`merge_rounds`) into one record;
``bench ab`` (:mod:`bench.timing.ab`) alternates two revisions' rounds in one session.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

import numpy as np

__all__ = ["AB_ROUNDS", "TIMING_ROUNDS", "TIMING_QUICK_ROUNDS", "MIN_ROUNDS", "rotate_groups",
           "merge_rounds", "run_round", "child_argv", "new_session"]

#: ``bench ab``'s rounds per side (and the gate check's). On this project's 2-core VM a row's round
#: median scatters by ~10% between rounds even relative to its round's dense rows, so a 1.3x
#: change of the 6 WCC rows of the quick grid is caught in every one of them in 98% of simulated
#: pairs at 10 rounds, 88% at 8, 40% at 5 (tests/test_gate_stats.py prints the figures). A quick
#: round takes ~15 s, so bench ab --quick takes ~6 min with the builds.
AB_ROUNDS = 10
#: ``bench timing``'s rounds (full / ``--quick``). Fewer: a record is compared with records taken
#: at other times, where the noise between sessions dominates whatever the rounds add.
TIMING_ROUNDS = 3
TIMING_QUICK_ROUNDS = 2
MIN_ROUNDS = 2  # one round has no band between rounds

T = TypeVar("T")


def new_session() -> str:
    """A fresh session id: records sharing one had their rounds interleaved in one session."""
    return uuid.uuid4().hex[:12]


def rotate_groups(items: Sequence[T], key: Callable[[T], Any], by: int) -> list[T]:
    """``items`` with its runs of equal ``key`` (cases sharing a conv and input) rotated by ``by``
    runs: round ``i`` starts at the ``i``-th group, so no row is always timed first (warm-up of the
    process) or last, and groups are never split."""
    groups: list[list[T]] = []
    for item in items:
        if groups and key(groups[-1][0]) == key(item):
            groups[-1].append(item)
        else:
            groups.append([item])
    if not groups:
        return []
    k = by % len(groups)
    return [item for g in groups[k:] + groups[:k] for item in g]


_DROP = ("--rounds", "--out", "--name", "--rotate", "--session")


def child_argv(argv: Sequence[str], drop: Sequence[str] = _DROP) -> list[str]:
    """``argv`` (a ``bench timing`` command line, without the command) minus the options ``drop``
    (``--opt value`` and ``--opt=value`` forms) and ``--no-progress``."""
    out, skip = [], False
    for tok in argv:
        if skip:
            skip = False
            continue
        name = tok.split("=", 1)[0]
        if name in drop:
            skip = "=" not in tok
            continue
        if tok == "--no-progress":
            continue
        out.append(tok)
    return out


def run_round(argv: Sequence[str], *, cwd: str | os.PathLike[str] | None = None, env: dict[str, str] | None = None,
              python: str = sys.executable, log: Callable[[str], None] | None = None,
              entry: Sequence[str] = ("-m", "bench")) -> dict[str, Any]:
    """Run ``python -m bench timing ARGV --out TMP --name round --no-progress`` in a fresh process
    (in ``cwd``, with ``env``) and return the record it wrote. Raises RuntimeError (with the
    process's last output) when it fails. ``entry``: what follows ``python`` instead of ``-m bench``
    (the gate check's planted slowdown, :mod:`bench.timing._planted`)."""
    with tempfile.TemporaryDirectory(prefix="wcc-round-") as tmp:
        cmd = [python, *entry, "timing", *argv, "--out", tmp, "--name", "round", "--no-progress"]
        proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        path = Path(tmp) / "timing" / "round.json"
        if proc.returncode != 0 or not path.is_file():
            tail = "\n".join(proc.stdout.splitlines()[-15:])
            raise RuntimeError(f"round failed (exit {proc.returncode}): {' '.join(cmd)}\n{tail}")
        if log is not None:
            log(proc.stdout.splitlines()[-1] if proc.stdout.strip() else "")
        return json.loads(path.read_text(encoding="utf-8"))


def _identity(row: dict[str, Any], fields: Sequence[str]) -> str:
    return json.dumps([row.get(f) for f in fields], sort_keys=True)


def _round_summary(row: dict[str, Any]) -> dict[str, Any]:
    return {"median_s": row.get("median_s"), "iqr_s": row.get("iqr_s"), "n_samples": int(row.get("n_samples") or 0),
            "error": row.get("error")}


def _median(values: list[Any]) -> float | None:
    vals = [float(v) for v in values if v is not None]
    return float(np.median(vals)) if vals else None


# Per-round values that the merged row takes as the median over the rounds (ratios, like times,
# are per-round facts); the rest (the floor, the runtime's identity) are the first round's.
_MEDIAN_FIELDS = ("ratio_to_dense", "ratio_to_best_runtime", "best_runtime_median_s", "dense_median_s", "floor_ratio")


def _merge_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out = dict(rows[0])
    out["rounds"] = [_round_summary(r) for r in rows]
    ok = [r for r in rows if r.get("error") is None and r.get("median_s") is not None]
    if not ok:  # failed in every round: the first round's error stands
        return out
    out["error"] = None
    out["median_s"] = _median([r["median_s"] for r in ok])
    out["iqr_s"] = _median([r.get("iqr_s") for r in ok])
    out["samples"] = [s for r in ok for s in r.get("samples") or []]
    out["n_samples"] = len(out["samples"]) or sum(int(r.get("n_samples") or 0) for r in ok)
    for f in _MEDIAN_FIELDS:
        if f in out:
            out[f] = _median([r.get(f) for r in ok])
    return out


def merge_rounds(records: Sequence[dict[str, Any]], session: str) -> dict[str, Any]:
    """One timing record from the records of its rounds (the first is the template: grid,
    environment, peaks). Rows are paired by their identity (:func:`bench.rows.key_fields`); a row
    missing from a round has one round fewer."""
    from bench.rows import LayerRow, ModelRow, key_fields

    if not records:
        raise ValueError("merge_rounds needs at least one round")
    out = dict(records[0])
    for what, cls in (("layer_rows", LayerRow), ("model_rows", ModelRow)):
        fields = key_fields(cls)
        by_id: dict[str, list[dict[str, Any]]] = {}
        for rec in records:
            for row in rec.get(what) or []:
                by_id.setdefault(_identity(row, fields), []).append(row)
        out[what] = [_merge_row(by_id[_identity(row, fields)]) for row in records[0].get(what) or []]
    out["rounds"] = len(records)
    out["session"] = session
    out["wall_time_s"] = float(sum(r.get("wall_time_s") or 0.0 for r in records))
    return out
