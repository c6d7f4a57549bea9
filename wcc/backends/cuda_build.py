"""Build, cache and load the compiled kernels of the ``cuda`` backend; compile them without a GPU.

Two source files (package data, in ``csrc/``):

* ``wcc_cuda_kernels.cu`` -- the kernels and their C launchers. CUDA runtime headers only (no
  torch), so ``nvcc`` compiles it alone, for any architecture, on a machine without a GPU.
* ``wcc_cuda_binding.cpp`` -- the thin torch binding (``torch.ops.wcc_cuda.*``).

With a CUDA build of torch and a GPU, both are compiled on first use by
``torch.utils.cpp_extension.load`` (needs ``nvcc``, a C++ compiler and ``ninja``) for the GPU's
architecture and cached; later processes only load the library. Pre-build with
``python -m wcc.backends.cuda_build`` (or ``nox -s build``).

``python -m wcc.backends.cuda_build --compile-only --arch 80,87,90 --out DIR`` compiles the
kernels only, with ``nvcc``, one object per architecture (``wcc_cuda_kernels.sm_80.o``, ...): a
check that they build for e.g. A100 (sm_80), Jetson Orin (sm_87) and H100 (sm_90) that needs
neither a GPU nor a CUDA torch (CI runs it).

``nvcc`` is looked up in ``$WCC_NVCC``, ``$CUDA_HOME/bin``, ``PATH``, ``/usr/local/cuda/bin``, then the
``nvidia-cuda-nvcc`` wheel (``pip install 'wcc-bench[nvcc]'``, the project's way to get one).

Cache location, first that is set: ``$WCC_CUDA_CACHE``, ``$TORCH_EXTENSIONS_DIR/wcc``,
``$XDG_CACHE_HOME/wcc``, ``~/.cache/wcc``; one subfolder per torch, CUDA and Python version.
``WCC_CUDA_BUILD=0`` disables the backend (``auto`` then moves on to ``triton``/``reference``).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

from wcc.backends._build import cache_root, load_once, report_load

__all__ = [
    "BINDING",
    "EXT_NAME",
    "KERNELS",
    "NVCC_FLAGS",
    "cache_dir",
    "compile_only",
    "find_nvcc",
    "load",
    "main",
]

_CSRC = Path(__file__).with_name("csrc")
KERNELS = _CSRC / "wcc_cuda_kernels.cu"
BINDING = _CSRC / "wcc_cuda_binding.cpp"
EXT_NAME = "wcc_cuda_kernels"
# -fmad=false: no fused multiply-add contraction, so the transform and the quantizer round like
# the reference (the GEMMs' own FMAs are explicit and unaffected in spirit: only rounding order).
NVCC_FLAGS = ["-O3", "-std=c++17", "-fmad=false", "--expt-relaxed-constexpr"]

_lock = threading.Lock()
_state: dict[str, object] = {}


def find_nvcc() -> str | None:
    """Path of an ``nvcc`` to use, or None (see the module docstring for the search order)."""
    candidates = [os.environ.get("WCC_NVCC", "")]
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            candidates.append(os.path.join(os.environ[var], "bin", "nvcc"))
    candidates.append(shutil.which("nvcc") or "")
    candidates.append("/usr/local/cuda/bin/nvcc")
    try:  # the nvidia-cuda-nvcc wheel (CUDA 13 layout: nvidia/cu13/bin; CUDA 12: nvidia/cuda_nvcc/bin)
        import nvidia  # type: ignore[import-not-found]

        for root in getattr(nvidia, "__path__", []):
            candidates += [os.path.join(root, "cu13", "bin", "nvcc"), os.path.join(root, "cuda_nvcc", "bin", "nvcc")]
    except ImportError:
        pass
    for path in candidates:
        if path and os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def _parse_archs(text: str) -> list[int]:
    archs = []
    for part in text.replace(" ", "").split(","):
        m = re.fullmatch(r"(?:sm_)?(\d)\.?(\d+)", part)
        if not m:
            raise ValueError(f"bad architecture {part!r}: use compute capabilities such as 80,87,90 (or sm_80)")
        archs.append(int(m.group(1) + m.group(2)))
    if not archs:
        raise ValueError("no architecture given")
    return archs


def compile_only(archs: list[int], out_dir: Path, nvcc: str | None = None, verbose: bool = False) -> list[Path]:
    """Compile ``wcc_cuda_kernels.cu`` with nvcc alone, one object per architecture.

    Returns the objects, ``out_dir / f"wcc_cuda_kernels.sm_{arch}.o"``. Raises RuntimeError with
    nvcc's output when it is missing or a compilation fails. Needs no GPU and no CUDA torch.
    """
    nvcc = nvcc or find_nvcc()
    if nvcc is None:
        raise RuntimeError("nvcc not found (set WCC_NVCC or CUDA_HOME, or pip install 'wcc-bench[nvcc]')")
    out_dir.mkdir(parents=True, exist_ok=True)
    objects = []
    for arch in archs:
        obj = out_dir / f"{KERNELS.stem}.sm_{arch}.o"
        cmd = [nvcc, "-c", *NVCC_FLAGS, f"-gencode=arch=compute_{arch},code=sm_{arch}",
               "-Xcompiler", "-fPIC", "-I", str(_CSRC), str(KERNELS), "-o", str(obj)]
        if verbose:
            print(" ".join(cmd), flush=True)
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0 or not obj.is_file():
            raise RuntimeError(f"nvcc failed for sm_{arch} (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}")
        if verbose and (proc.stdout or proc.stderr):
            print(proc.stdout + proc.stderr, end="", flush=True)
        objects.append(obj)
    return objects


def cache_dir() -> Path:
    """Folder that holds this machine's build of the extension."""
    import torch

    root = cache_root("WCC_CUDA_CACHE")
    version = re.sub(r"[^A-Za-z0-9_.]", "_", f"{torch.__version__}-cu{torch.version.cuda}")
    return Path(root) / f"cuda-torch{version}-py{sys.version_info[0]}{sys.version_info[1]}"


def _precheck() -> str | None:
    """Why the extension cannot be built or run here (cheap: no compiler is started)."""
    import torch

    if os.environ.get("WCC_CUDA_BUILD", "").strip().lower() in ("0", "no", "false", "off"):
        return "disabled by WCC_CUDA_BUILD=0"
    for src in (KERNELS, BINDING):
        if not src.is_file():
            return f"kernel source {src} is missing (is the package data installed?)"
    if torch.version.cuda is None:
        return (f"torch {torch.__version__} is a CPU-only build (torch.version.cuda is None); install a CUDA "
                f"build of torch (on Jetson: NVIDIA's wheel for JetPack)")
    if not torch.cuda.is_available():
        return (f"no CUDA device visible (torch {torch.__version__}, CUDA {torch.version.cuda}: "
                "cuda.is_available() is False)")
    if find_nvcc() is None:
        return "nvcc not found to build the kernels (set CUDA_HOME, or pip install 'wcc-bench[nvcc]')"
    if shutil.which(os.environ.get("CXX", "c++")) is None:
        return "no C++ compiler for the torch binding (install g++ or set CXX)"
    try:
        import ninja  # noqa: F401
    except ImportError:
        if shutil.which("ninja") is None:
            return "ninja is not installed (pip install ninja, or the 'cpu' extra)"
    return None


def _compile(verbose: bool) -> None:
    from torch.utils import cpp_extension

    nvcc = find_nvcc()
    if nvcc and not os.environ.get("CUDA_HOME"):
        # torch's builder finds nvcc through CUDA_HOME; point it at the one found above.
        os.environ["CUDA_HOME"] = str(Path(nvcc).resolve().parents[1])
        cpp_extension.CUDA_HOME = os.environ["CUDA_HOME"]
    build = cache_dir()
    build.mkdir(parents=True, exist_ok=True)
    if not verbose and not (build / f"{EXT_NAME}.so").exists():
        print(f"wcc: compiling the cuda backend's kernels for this GPU (first use: a few minutes; cached in {build})",
              file=sys.stderr, flush=True)
    cpp_extension.load(
        name=EXT_NAME,
        sources=[str(BINDING), str(KERNELS)],
        extra_cflags=["-O3"],
        extra_cuda_cflags=NVCC_FLAGS,
        extra_include_paths=[str(_CSRC)],
        build_directory=str(build),
        is_python_module=False,  # the ops register themselves as torch.ops.wcc_cuda.*
        verbose=verbose,
    )


def status() -> str | None:
    """Why the backend cannot run here, without building (None: it may, a build will tell)."""
    if "ok" in _state:
        return None
    if "error" in _state:
        return str(_state["error"])
    return _precheck()


def load(verbose: bool = False) -> str | None:
    """Compile (once per cache folder) and load the extension; None on success, else why not.

    The outcome is remembered for the process.
    """
    def build() -> None:
        _compile(verbose)
        import torch

        torch.ops.wcc_cuda.forward  # noqa: B018 - fails here if registration did not happen

    def failure(exc: Exception) -> str:
        text = " ".join(str(exc).split())
        return f"building the CUDA kernels failed: {type(exc).__name__}: {text[-600:]}"

    return load_once(_lock, _state, _precheck, build, failure)


def main(argv: list[str] | None = None) -> int:
    """``python -m wcc.backends.cuda_build``: build and load the extension, or ``--compile-only``."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m wcc.backends.cuda_build",
        description="Build the cuda backend's kernels (needs a CUDA torch and a GPU), or with --compile-only "
                    "compile them with nvcc alone for the listed architectures (no GPU needed).",
    )
    parser.add_argument("--compile-only", action="store_true",
                        help="only compile the .cu kernels with nvcc, one object per --arch, into --out")
    parser.add_argument("--arch", default="80,87,90",
                        help="compute capabilities for --compile-only, comma-separated (default: 80,87,90 = "
                             "A100, Jetson Orin, H100)")
    parser.add_argument("--out", type=Path, default=Path("build/cuda-objects"),
                        help="output folder of --compile-only (default: build/cuda-objects)")
    parser.add_argument("--nvcc", default=None, help="nvcc to use (default: searched, see the module docstring)")
    parser.add_argument("--quiet", action="store_true", help="do not show the compiler's commands and output")
    args = parser.parse_args(argv)
    if args.compile_only:
        try:
            archs = _parse_archs(args.arch)
            objects = compile_only(archs, args.out, nvcc=args.nvcc, verbose=not args.quiet)
        except (ValueError, RuntimeError) as exc:
            print(f"wcc cuda compile-only: FAILED: {exc}", file=sys.stderr)
            return 1
        for obj in objects:
            print(f"wcc cuda compile-only: {obj} ({obj.stat().st_size} bytes)")
        return 0
    return report_load("cuda", load(verbose=not args.quiet), cache_dir())


if __name__ == "__main__":
    raise SystemExit(main())
