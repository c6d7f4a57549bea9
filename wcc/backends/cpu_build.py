"""Build, cache and load the compiled kernels of the ``cpu`` backend (``csrc/wcc_cpu.cpp``).

The kernels are a C++/OpenMP torch extension, compiled on first use with
``torch.utils.cpp_extension.load`` (needs a C++ compiler and ``ninja``) and cached, so later
processes only load the shared library. Nothing here runs at import time.

Cache location, first that is set: ``$WCC_CPU_CACHE``, ``$TORCH_EXTENSIONS_DIR/wcc``,
``$XDG_CACHE_HOME/wcc``, ``~/.cache/wcc``. Each torch version, Python version and CPU gets its
own subfolder, because the code is compiled for the host CPU (``-march=native``).

``WCC_CPU_BUILD=0`` disables the compiled backend (``auto`` then falls back to the reference).
Pre-build with ``python -m wcc.backends.cpu_build`` (or ``nox -s build``).
"""

from __future__ import annotations

import hashlib
import os
import platform
import re
import shutil
import sys
import threading
from pathlib import Path

from wcc.backends._build import cache_root, load_once, report_load

__all__ = ["SOURCE", "EXT_NAME", "cache_dir", "load", "load_error", "main"]

SOURCE = Path(__file__).with_name("csrc") / "wcc_cpu.cpp"
EXT_NAME = "wcc_cpu_kernels"
_BASE_FLAGS = ["-O3", "-fopenmp", "-ffp-contract=off"]  # no FMA: formulas must round like the reference

_lock = threading.Lock()
_state: dict[str, object] = {}  # "ok": True, or "error": str, once a load was attempted


def _cpu_tag() -> str:
    """Short hash of the CPU model and its instruction-set flags (the build targets this CPU)."""
    text = platform.machine()
    try:
        info = Path("/proc/cpuinfo").read_text(errors="replace")
        model = re.search(r"^model name\s*:\s*(.*)$", info, re.M)
        flags = re.search(r"^(?:flags|Features)\s*:\s*(.*)$", info, re.M)
        text += (model.group(1) if model else "") + (flags.group(1) if flags else "")
    except OSError:
        text += platform.processor()
    return hashlib.sha1(text.encode()).hexdigest()[:10]


def cache_dir() -> Path:
    """Folder that holds this machine's build of the kernels."""
    import torch

    root = cache_root("WCC_CPU_CACHE")
    version = re.sub(r"[^A-Za-z0-9_.]", "_", torch.__version__)
    # The source's hash too: checkouts of different commits share this cache, and one built
    # from another revision of wcc_cpu.cpp must never be loaded for this one.
    src = hashlib.sha1(SOURCE.read_bytes()).hexdigest()[:8]
    tag = f"cpu-torch{version}-py{sys.version_info[0]}{sys.version_info[1]}-{_cpu_tag()}-src{src}"
    return Path(root) / tag


def _compile(verbose: bool) -> None:
    from torch.utils import cpp_extension

    build = cache_dir()
    build.mkdir(parents=True, exist_ok=True)
    library = build / f"{EXT_NAME}.so"
    if not verbose and (not library.exists() or library.stat().st_mtime < SOURCE.stat().st_mtime):
        # Otherwise the first WCC call on CPU would stall for a minute without a word.
        print(f"wcc: compiling the cpu backend's kernels for this machine (first use: about a minute on 2 "
              f"cores; cached in {build})", file=sys.stderr, flush=True)
    errors = []
    # Tuned for the host CPU first; a compiler that rejects -march=native gets a generic build.
    for flags in (_BASE_FLAGS + ["-march=native"], _BASE_FLAGS):
        try:
            cpp_extension.load(
                name=EXT_NAME,
                sources=[str(SOURCE)],
                extra_cflags=flags,
                extra_ldflags=["-fopenmp"],
                build_directory=str(build),
                is_python_module=False,  # the ops register themselves as torch.ops.wcc_cpu.*
                verbose=verbose,
            )
            return
        except Exception as exc:  # noqa: BLE001 - every failure becomes the backend's reason
            errors.append(f"{' '.join(flags)}: {type(exc).__name__}: {_tail(str(exc))}")
    raise RuntimeError("building the CPU kernels failed; " + " | ".join(errors))


def _tail(text: str, limit: int = 600) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else "..." + text[-limit:]


def _precheck() -> str | None:
    if os.environ.get("WCC_CPU_BUILD", "").strip().lower() in ("0", "no", "false", "off"):
        return "disabled by WCC_CPU_BUILD=0"
    if not SOURCE.is_file():
        return f"kernel source {SOURCE} is missing (is the package data installed?)"
    compiler = os.environ.get("CXX", "c++")
    if shutil.which(compiler) is None:
        return f"no C++ compiler ({compiler!r} not on PATH; set CXX or install g++/clang++)"
    try:
        import ninja  # noqa: F401  (torch's extension builder drives ninja)
    except ImportError:
        if shutil.which("ninja") is None:
            return "ninja is not installed (pip install ninja, or the 'cpu' extra)"
    return None


def load(verbose: bool = False) -> str | None:
    """Compile (once per cache folder) and load the kernels; None on success, else why not.

    The outcome is remembered for the process, so later calls are free.
    """
    def build() -> None:
        _compile(verbose)
        import torch

        torch.ops.wcc_cpu.forward  # noqa: B018 - fails here if registration did not happen

    return load_once(_lock, _state, _precheck, build,
                     lambda exc: str(exc) if isinstance(exc, RuntimeError) else f"{type(exc).__name__}: {exc}")


def load_error() -> str | None:
    """The reason the last load failed, without trying to build (None: loaded or not tried)."""
    return None if "error" not in _state else str(_state["error"])


def main(argv: list[str] | None = None) -> int:
    """``python -m wcc.backends.cpu_build``: build (or find) the kernels and say where."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m wcc.backends.cpu_build", description=__doc__.split("\n")[0])
    parser.add_argument("--quiet", action="store_true", help="do not show the compiler's output")
    args = parser.parse_args(argv)
    return report_load("cpu", load(verbose=not args.quiet), cache_dir())


if __name__ == "__main__":
    raise SystemExit(main())
