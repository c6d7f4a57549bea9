"""A machine's run-to-run noise, calibrated: what lets two separately taken records be judged.

The rounds of one record share a minute of the machine's life; records taken minutes or days
apart differ by more (another tenant, the clock, thermal state). :mod:`bench.report.verdict`
therefore judges two records of different sessions with a per-machine *run-to-run sd*: the sd of
the log of one record's row value between separately taken records. ``nox -s gate_check``
measures it (:mod:`bench.timing.gate_check`) and writes it here; ``bench compare`` and ``bench
report`` read it (``--calibration``). A machine without one gets "inconclusive" past the factor
(``bench ab`` needs none: its two sides share a session).

The file (JSON): ``{"schema": "wcc-bench/calibration/v1", "machines": {<machine id>:
{"run_to_run_sd", "sessions", "rows", "created", "source", "label"}}}``; machine ids are
:func:`bench.report.load.machine_of`'s.
"""

from __future__ import annotations

import json
import math
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

__all__ = ["default_path", "load_calibration", "write_calibration", "SCHEMA", "GATE_SETTING", "Setting"]

#: A timing setting: (``source`` of the rows, i.e. ``timing`` or ``timing:process-clock``, torch
#: threads as text). Run-to-run noise depends on it - on the 2-core VM, separately taken
#: ``bench timing --quick`` records (2 threads, wall clock) differ by up to x1.85 on unchanged
#: code, far more than the one-thread CPU-time rounds of the gate check - so a calibration
#: applies only to rows timed under the setting it was measured under.
Setting = tuple[str, str]
#: The setting of the gate check's rounds (bench ab's: one thread, CPU time); entries written
#: before settings were recorded were measured under it.
GATE_SETTING: Setting = ("timing:process-clock", "1")

SCHEMA = "wcc-bench/calibration/v1"


def default_path() -> Path:
    """``$WCC_BENCH_CALIBRATION``, else ``~/.cache/wcc-bench/run-to-run.json`` (per user: it
    describes the machine, not a results store)."""
    env = os.environ.get("WCC_BENCH_CALIBRATION")
    if env:
        return Path(env)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "wcc-bench" / "run-to-run.json"


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable calibration file ({exc})") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA or not isinstance(data.get("machines"), dict):
        raise ValueError(f"{path}: not a calibration file (schema {SCHEMA!r} with a 'machines' object expected)")
    for machine, entry in data["machines"].items():
        sd = entry.get("run_to_run_sd") if isinstance(entry, dict) else None
        if not isinstance(sd, (int, float)) or not math.isfinite(sd) or sd < 0:
            raise ValueError(f"{path}: machine {machine!r} has no valid run_to_run_sd (a number >= 0)")
    return data


def load_calibration(path: str | os.PathLike[str] | None = None) -> dict[str, tuple[float, Setting]]:
    """machine id -> (run-to-run sd, the :data:`Setting` it was measured under) from ``path``
    (default :func:`default_path`; a missing default file is no calibration, a missing named one
    an error). Raises ValueError on a bad file."""
    p = Path(path) if path is not None else default_path()
    if not p.is_file():
        if path is not None:
            raise ValueError(f"{p}: no such calibration file (nox -s gate_check writes one)")
        return {}
    out: dict[str, tuple[float, Setting]] = {}
    for machine, entry in _read(p)["machines"].items():
        setting = entry.get("setting")
        if isinstance(setting, dict) and all(isinstance(setting.get(k), str) for k in ("source", "threads")):
            out[machine] = (float(entry["run_to_run_sd"]), (setting["source"], setting["threads"]))
        elif setting is None:
            out[machine] = (float(entry["run_to_run_sd"]), GATE_SETTING)
        else:
            raise ValueError(f"{p}: machine {machine!r} has a bad setting {setting!r} "
                             f"(expected {{'source': str, 'threads': str}})")
    return out


def write_calibration(machine: str, sd: float, *, sessions: int, rows: int, label: str = "",
                      source: str = "nox -s gate_check", setting: Setting = GATE_SETTING,
                      path: str | os.PathLike[str] | None = None) -> Path:
    """Store ``machine``'s run-to-run sd under ``setting`` (replacing its earlier entry, keeping
    other machines')."""
    from bench.store import atomic_write_text

    p = Path(path) if path is not None else default_path()
    data: dict[str, Any] = _read(p) if p.is_file() else {"schema": SCHEMA, "machines": {}}
    machines: dict[str, Any] = data["machines"]
    machines[machine] = {"run_to_run_sd": float(sd), "sessions": sessions, "rows": rows, "label": label,
                         "source": source, "setting": {"source": setting[0], "threads": setting[1]},
                                 "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    atomic_write_text(p, json.dumps(data, indent=2, sort_keys=True) + "\n")
    return p
