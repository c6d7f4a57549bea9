"""Argument checks shared by every ``python -m bench`` command.

Each command collects the problems of all its arguments with these helpers *before* any work
(loading records, generating data, benchmarking), prints every one naming its flag, and exits 2.
Each helper returns an error message, or ``None`` when the value is fine.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["existing_path", "int_at_least", "report_errors", "writable_dir"]


def existing_path(flag: str, value: str) -> str | None:
    """``value`` must exist (a file or a folder)."""
    if not Path(value).exists():
        return f"{flag} {value}: no such file or directory; give an existing results folder or record file"
    return None


def writable_dir(flag: str, value: str) -> str | None:
    """``value`` is (or can be created as) a folder this process may write into.

    A folder that does not exist yet is fine when its nearest existing ancestor is a writable
    folder: the command creates it later, only once the work has been done.
    """
    p = Path(value)
    if p.exists() and not p.is_dir():
        return f"{flag} {value}: exists and is not a folder; give a folder path"
    probe = p
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        return f"{flag} {value}: {probe} is not a folder, so {value} cannot be created; give another path"
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"{flag} {value}: {probe} is not writable by this user; give a folder you can write to"
    return None


def int_at_least(flag: str, value: int | None, low: int) -> str | None:
    """``value`` (when given) must be an integer >= ``low``."""
    if value is not None and value < low:
        return f"{flag} must be >= {low}, got {value}"
    return None


def report_errors(prog: str, errors: list[str | None]) -> bool:
    """Print every non-``None`` message to stderr as ``prog: message``; True when there was any."""
    import sys

    found = [e for e in errors if e]
    for msg in found:
        print(f"{prog}: {msg}", file=sys.stderr)
    return bool(found)
