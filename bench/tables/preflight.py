"""Pre-flight data check: decode every image and label a run will use, before any training.

A damaged file (a truncated PNG, label ids outside the table's classes, an image whose label has
another size) used to surface only at evaluation, after a row had trained for hours. Here every
sample of every split of every table that will run goes through its dataset's own ``load`` (the
exact decoding and checks training and evaluation use), on a thread pool: PIL decodes with the
GIL released.

Results are cached in ``<out>/preflight-cache.json`` by each file's size and mtime, so a rerun
(a resume, a second ``--dry-run``) re-decodes only files that changed.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterable

from bench.store import atomic_write_text

__all__ = ["check_samples", "CACHE_NAME"]

CACHE_NAME = "preflight-cache.json"
_VERSION = 1  # bump when the checks change: older cache entries then count as unchecked


def _stamp(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def _check_one(item: tuple[Any, int]) -> str | None:
    dataset, index = item
    try:
        dataset.load(index)
    except (OSError, ValueError) as exc:  # the readers' messages name the file and the problem
        return str(exc)
    return None


def _read_cache(path: Path | None) -> dict[str, list[int]]:
    if path is None or not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # a damaged cache only costs a re-check
    if not isinstance(data, dict) or data.get("version") != _VERSION or not isinstance(data.get("ok"), dict):
        return {}
    return data["ok"]


def check_samples(datasets: Iterable[tuple[str, Any]], cache: Path | None = None,
                  workers: int | None = None) -> list[str]:
    """Decode and check every sample of ``datasets``; return the problems found (empty: all good).

    Args:
        datasets: ``(label, dataset)`` pairs; each dataset has ``samples`` (a list of
            ``(image path, target path)``) and ``load(i)``, which raises ``ValueError`` or
            ``OSError`` naming the file for a bad sample.
        cache: JSON file remembering the samples that passed, by size and mtime.
        workers: decoding threads (default: the CPUs this process may use).
    """
    ok = _read_cache(cache)
    problems: list[str] = []
    todo: list[tuple[str, list[int], Any, int]] = []
    for label, ds in datasets:
        for i, (image, target) in enumerate(ds.samples):
            key = f"{label}|{image}|{target}"
            try:
                stamp = _stamp(Path(image)) + _stamp(Path(target))
            except OSError as exc:
                problems.append(f"{exc}")
                continue
            if ok.get(key) != stamp:
                todo.append((key, stamp, ds, i))
    if todo:
        workers = workers or max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                                 else (os.cpu_count() or 1))
        with ThreadPoolExecutor(workers) as pool:
            for (key, stamp, _, _), err in zip(todo, pool.map(_check_one, [(t[2], t[3]) for t in todo])):
                if err is None:
                    ok[key] = stamp
                else:
                    problems.append(err)
    if cache is not None:
        atomic_write_text(cache, json.dumps({"version": _VERSION, "ok": ok}) + "\n")
    return problems
