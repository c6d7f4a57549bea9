"""Helpers shared by the asv benchmarks: device, threads and clock (asv is the per-commit tool)."""

from __future__ import annotations

import os
import time
import timeit
from typing import Any, Callable

import torch


def set_threads() -> None:
    """Fix the CPU thread count: ``WCC_ASV_THREADS``, default 1. asv looks for changes between
    commits, not for peak speed, and one thread is far steadier on a shared machine, where every
    op of a multi-threaded run can stall at a barrier while another process holds a core."""
    torch.set_num_threads(int(os.environ.get("WCC_ASV_THREADS", "1")))


def device() -> torch.device:
    """CUDA when present (override with ``WCC_ASV_DEVICE=cpu``), else the CPU; sets the threads."""
    set_threads()
    name = os.environ.get("WCC_ASV_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _timer() -> Callable[[], float]:
    """The clock of the time benchmarks. On the CPU: the process's CPU time, which other
    processes on a shared machine do not inflate (with one thread it tracks the work of one
    call; ``WCC_ASV_TIMER=wall`` switches to wall-clock time). On CUDA: wall-clock time (each
    benchmark synchronises the device before returning)."""
    on_cpu = (os.environ.get("WCC_ASV_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")) == "cpu"
    return time.process_time if on_cpu and os.environ.get("WCC_ASV_TIMER", "cpu") != "wall" else timeit.default_timer


TIMER = _timer()


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def require(module: str, what: str) -> Any:
    """Import ``module`` or skip the benchmark (asv: NotImplementedError in setup = skipped)."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise NotImplementedError(f"this commit has no {what} ({exc})") from None
