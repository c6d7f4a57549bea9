"""What the builds of the compiled backends share (``cpu_build``, ``cuda_build``): where the
cache lives and the build-and-load-once state machine. It imports no backend."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Callable

__all__ = ["cache_root", "load_once", "report_load"]


def cache_root(env_var: str) -> Path:
    """The cache folder, first that is set: ``$<env_var>``, ``$TORCH_EXTENSIONS_DIR/wcc``,
    ``$XDG_CACHE_HOME/wcc`` (default ``~/.cache/wcc``)."""
    root = os.environ.get(env_var)
    if not root and os.environ.get("TORCH_EXTENSIONS_DIR"):
        root = os.path.join(os.environ["TORCH_EXTENSIONS_DIR"], "wcc")
    if not root:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(xdg, "wcc")
    return Path(root)


def load_once(lock: threading.Lock, state: dict[str, object], precheck: Callable[[], str | None],
              build: Callable[[], None], failure: Callable[[Exception], str]) -> str | None:
    """Build and load once per process: None on success, else why not (remembered in ``state``,
    so later calls are free). ``precheck`` says why a build cannot even start; ``build`` raises
    when building or loading fails, and ``failure`` turns that exception into the reason."""
    with lock:
        if "ok" in state:
            return None
        if "error" in state:
            return str(state["error"])
        reason = precheck()
        if reason is None:
            try:
                build()
            except Exception as exc:  # noqa: BLE001 - every failure becomes the backend's reason
                reason = failure(exc)
        if reason is None:
            state["ok"] = True
        else:
            state["error"] = reason
        return reason


def report_load(label: str, reason: str | None, cache: Path) -> int:
    """The ``python -m wcc.backends.*_build`` ending: say whether the kernels loaded, as an exit code."""
    import sys

    if reason is not None:
        print(f"wcc {label} kernels: NOT available: {reason}", file=sys.stderr)
        return 1
    print(f"wcc {label} kernels: built and loaded from {cache}")
    return 0
