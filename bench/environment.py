"""The environment recorded with every result: commit, packages, CPU (and GPU where probed).

GPU/Jetson probes live in :mod:`bench.timing` (they are only needed by timing results); this
module records what every result needs and never fails: missing facts become ``None``.
"""

from __future__ import annotations

import functools
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["environment", "git_state", "cpu_info"]

_PACKAGES = ("wcc-bench", "torch", "numpy", "triton", "pillow")
_REPO = Path(__file__).resolve().parent.parent


def git_state(repo: Path = _REPO) -> tuple[str | None, bool | None]:
    """(commit sha, dirty flag) of the checkout, or (None, None) outside git."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                                capture_output=True, text=True, timeout=10, check=True).stdout
        return sha, bool(status.strip())
    except (OSError, subprocess.SubprocessError):
        return None, None


def _version(pkg: str) -> str | None:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None


@functools.lru_cache(maxsize=1)
def cpu_info() -> dict[str, Any]:
    model = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {
        "model": model or platform.processor() or None,
        "machine": platform.machine(),
        "logical_cpus": os.cpu_count(),
    }
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
    except ImportError:
        info["torch_threads"] = None
    return info


# Environment variables that change timings (threads, allocator, forced backend, kernel build).
_TIMING_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "THP_MEM_ALLOC_ENABLE", "LD_PRELOAD", "WCC_BACKEND",
                "WCC_CPU_BUILD", "WCC_CPU_HUGE_PAGES", "TRITON_INTERPRET", "CUDA_VISIBLE_DEVICES")


def _transparent_hugepages() -> str | None:
    # The bracketed word of "always [madvise] never": whether huge pages back large tensors
    # (torch with THP_MEM_ALLOC_ENABLE=1, the WCC cpu backend's outputs) -- a large effect on
    # CPU timings of big activations.
    try:
        text = Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
    except OSError:
        return None
    start, end = text.find("["), text.find("]")
    return text[start + 1:end] if 0 <= start < end else None


def environment(extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """A JSON-ready description of where a result was produced."""
    commit, dirty = git_state()
    env: dict[str, Any] = {
        "commit": commit,
        "dirty": dirty,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "hostname": platform.node(),
        "packages": {p: _version(p) for p in _PACKAGES},
        "cpu": cpu_info(),
        "argv": sys.argv,
        "settings": {name: os.environ.get(name) for name in _TIMING_VARS},
        "transparent_hugepages": _transparent_hugepages(),
    }
    try:
        import torch

        env["torch_cuda"] = torch.version.cuda
        env["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        env["torch_cuda"] = env["gpu"] = None
    if extra:
        env.update(extra)
    return env
