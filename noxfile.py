"""nox sessions of wcc-bench. ``nox -l`` lists them; ``nox -s NAME -- ARGS`` passes ARGS through.

Torch handling (the one heavy dependency):

* If the Python running nox can already import torch (a CUDA, ROCm or Jetson build, say), the
  session virtualenvs are created with ``--system-site-packages`` and reuse it: nothing
  replaces your torch. Force this with ``WCC_REUSE_TORCH=1`` (or forbid it with ``=0``).
* Otherwise the sessions install ``$WCC_TORCH`` (default ``torch==2.13.0``; on a machine
  whose pip finds only CUDA wheels, point it at the build you want, e.g. a CPU wheel file).

nvcc: the ``tests`` session compile-checks the cuda backend's kernels for sm_80/87/90. Where the
machine has no nvcc (``$CUDA_HOME/bin``, ``PATH``, ``/usr/local/cuda/bin``), it installs the
``nvcc`` extra (nvcc from PyPI) into the session; ``WCC_INSTALL_NVCC=0`` stops that (the test is
then skipped with the reason, or fails when ``CI`` is set), ``=1`` forces it.
"""

from __future__ import annotations

import importlib.util
import os

import nox

nox.options.default_venv_backend = "venv"
nox.options.sessions = ["tests"]

TORCH_SPEC = os.environ.get("WCC_TORCH", "torch==2.13.0")
_reuse_env = os.environ.get("WCC_REUSE_TORCH", "auto").lower()
REUSE_TORCH = _reuse_env in ("1", "yes", "true") or (
    _reuse_env == "auto" and importlib.util.find_spec("torch") is not None
)
VENV_PARAMS = ["--system-site-packages"] if REUSE_TORCH else []


def _link_running_env(session: nox.Session) -> None:
    """``--system-site-packages`` reaches only the *base* interpreter's packages. When nox itself
    runs inside a virtualenv (where the torch to reuse lives), append that environment's
    site-packages to the session's with a ``.pth`` file; the session's own packages still win."""
    import sys
    import sysconfig
    from pathlib import Path

    if sys.prefix == sys.base_prefix:
        return
    target = session.run("python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])",
                         silent=True).strip()
    Path(target, "_wcc_reuse_nox_env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")


def _provide_torch(session: nox.Session) -> None:
    if REUSE_TORCH:
        _link_running_env(session)
        session.run("python", "-c", "import torch; print('reusing torch', torch.__version__)")
    else:
        session.install(TORCH_SPEC)


def _install(session: nox.Session, extras: str) -> None:
    """Install torch (unless reused) and then the project with ``extras``, editable."""
    _provide_torch(session)
    session.install("-e", f".[{extras}]")


def _host_has_nvcc() -> bool:
    import shutil

    cuda_home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH") or ""
    return any(os.access(p, os.X_OK) for p in (os.path.join(cuda_home, "bin", "nvcc") if cuda_home else "",
                                               shutil.which("nvcc") or "", "/usr/local/cuda/bin/nvcc") if p)


def _want_pip_nvcc() -> bool:
    import platform

    choice = os.environ.get("WCC_INSTALL_NVCC", "auto").lower()
    if choice in ("0", "no", "false", "off"):
        return False
    if choice in ("1", "yes", "true", "on"):
        return True
    # PyPI's CUDA 13 nvcc wheels are for Linux x86_64 (a Jetson has JetPack's nvcc).
    return not _host_has_nvcc() and platform.system() == "Linux" and platform.machine() == "x86_64"


@nox.session(venv_params=VENV_PARAMS)
def tests(session: nox.Session) -> None:
    """The test suite (fast tests; add ``-- --run-slow`` for the slow ones).

    Includes the backend conformance battery (``--device``/``--dtype`` select it, e.g.
    ``nox -s tests -- tests/test_conformance.py --device cuda --dtype float16``) and the
    compile-only build of the cuda kernels for sm_80/87/90 (nvcc from PyPI where the host has none).
    """
    _install(session, "test,nvcc" if _want_pip_nvcc() else "test")
    session.run("python", "-m", "pytest", *(session.posargs or ["-q"]))


@nox.session
def lint(session: nox.Session) -> None:
    """ruff on the whole tree (rules in pyproject.toml); needs no torch."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".", *session.posargs)


@nox.session(venv_params=VENV_PARAMS)
def typecheck(session: nox.Session) -> None:
    """mypy on ``wcc`` and ``bench`` (settings in pyproject.toml)."""
    _install(session, "test")
    session.install("mypy>=1.10")
    # "python -m": with a reused environment the mypy script may live outside the session.
    session.run("python", "-m", "mypy", *session.posargs)


@nox.session(venv_params=VENV_PARAMS)
def smoke(session: nox.Session) -> None:
    """Build a WCC layer and check it against the dense conv (a 10-second sanity check)."""
    _install(session, "test")
    session.run("python", "-m", "wcc.info")
    session.run("python", "-m", "pytest", "-q", "tests/test_layers.py", *session.posargs)


_CUDA_PROBE = ("import torch; print('cuda-probe', torch.__version__, torch.version.cuda or 'none', "
               "int(torch.cuda.is_available()), torch.cuda.device_count())")


def _cuda_probe(session: nox.Session) -> tuple[str, str, bool, int]:
    """(torch version, its CUDA build or 'none', CUDA available, device count) in the session."""
    import re

    out = session.run("python", "-c", _CUDA_PROBE, silent=True)
    # The marker skips any warning torch prints while probing the driver.
    version, cuda_build, available, count = re.search(r"cuda-probe (\S+) (\S+) (\d) (\d+)", out).groups()
    return version, cuda_build, available == "1", int(count)


@nox.session(venv_params=VENV_PARAMS)
def build(session: nox.Session) -> None:
    """Pre-build the compiled kernels into their caches (else: on first use).

    The ``cpu`` backend's always; the ``cuda`` backend's when torch has CUDA and sees a GPU (a
    Jetson included). Elsewhere the cuda kernels are only compile-checked with nvcc (sm_80, sm_87,
    sm_90) when nvcc is installed. Arguments after ``--`` go to both builders (e.g. ``--quiet``).
    """
    _install(session, "cpu")
    session.run("python", "-m", "wcc.backends.cpu_build", *session.posargs)
    version, cuda_build, available, _ = _cuda_probe(session)
    if available:
        session.run("python", "-m", "wcc.backends.cuda_build", *session.posargs)
    elif _host_has_nvcc():
        session.log(f"torch {version} (CUDA build: {cuda_build}) sees no GPU: compile-checking the cuda kernels only")
        session.run("python", "-m", "wcc.backends.cuda_build", "--compile-only", *session.posargs)
    else:
        session.log(f"cuda backend not built: torch {version} (CUDA build: {cuda_build}) sees no GPU and there is "
                    "no nvcc (pip install 'wcc-bench[nvcc]' for the compile-only check)")


def _timing_stamp() -> str:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def _bench(session: nox.Session, device: str, default_timing_args: str) -> None:
    """``python -m bench timing`` into ``results/timing/<device>-<stamp>.json``.

    Arguments after ``--`` replace the default ones (so does ``WCC_TIMING_ARGS``); the command
    ends the session with its WCC / dense ratio table. Judge a change with
    ``python -m bench compare BASE NEW`` (the one regression gate).
    """
    import shlex

    timing_args = session.posargs or shlex.split(os.environ.get("WCC_TIMING_ARGS", default_timing_args))
    session.run("python", "-m", "bench", "timing", "--device", device, "--out", "results",
                "--name", f"{device}-{_timing_stamp()}", *timing_args)


@nox.session(venv_params=VENV_PARAMS)
def bench_cpu(session: nox.Session) -> None:
    """CPU timing: ``bench timing --quick`` (full grid: ``WCC_TIMING_ARGS=""``).

    Compare against an earlier record: ``python -m bench compare results/timing/OLD.json
    results/timing/NEW.json``.
    """
    _install(session, "bench,cpu,runtimes")
    _bench(session, "cpu", "--quick")


@nox.session(name="gate_check", venv_params=VENV_PARAMS)
def gate_check(session: nox.Session) -> None:
    """The regression gate's own false-alarm and detection rates on this machine.

    K sessions (``-- --pairs K``, default 5), each alternating three sides' rounds: the code as it
    is twice (an A/A pair) and once with the WCC cpu forward made 1.3x slower for real (a planted
    pair), judged by the rules of ``bench compare`` / ``bench ab``; prints both rates
    (:mod:`bench.timing.gate_check`), and stores the run-to-run noise between the sessions for
    ``bench compare`` (:mod:`bench.report.calibration`). Each session is 9 one-thread rounds.
    """
    _install(session, "bench,cpu")
    session.run("python", "-m", "bench.timing.gate_check", *session.posargs)


# bench_gpu's timing grid: bounded so that the whole session fits in about 10 minutes on one GPU
# (the full grid is `WCC_TIMING_ARGS=""`). The triton target shape (8, 256->256, 128x256; docs/design.md §8) is in
# the "extra" set; the model benchmark is DeepLabV3+ at 1024x2048 in float16 (timing's default).
BENCH_GPU_TIMING_ARGS = ("--shape-sets deeplabv3plus-mobilenetv2@1024x2048,extra --keep-ratios 1.0,0.25 --levels 3 "
                         "--dtypes float16 --directions fwd,fwdbwd --budget 0.3 --no-progress")

_PRINT_TABLES = """
import json, sys
from bench.timing.table import layer_ratio_table, model_table
record = json.load(open(sys.argv[1]))
if record.get("model_rows"):
    print("\\nModel latency and memory\\n"); print(model_table(record["model_rows"]))
if record.get("layer_rows"):
    print("\\nWCC / best-runtime (best dense op of the run) median time ratios, < 1 is faster\\n")
    print(layer_ratio_table(record["layer_rows"]))
"""


def _on_jetson() -> bool:
    return os.path.exists("/etc/nv_tegra_release")


@nox.session(venv_params=VENV_PARAMS)
def bench_gpu(session: nox.Session) -> None:
    """The one prepared run for a CUDA machine (a Jetson included), about 10 minutes:

    1. builds the cuda backend (``python -m wcc.backends.cuda_build``);
    2. runs the conformance battery on the GPU (``pytest tests/test_conformance.py --device cuda``,
       float32/float16/bfloat16) and the ``gpu``-marked tests;
    3. times layers and DeepLabV3+ at 1024x2048 (``python -m bench timing --device cuda``: cuDNN
       dense and the WCC backends that run here; the runtime baselines that bench timing knows and
       finds installed), recording the device probes (NVML energy, or the Jetson power rails);
    4. writes the record to ``results/timing/``, builds the report into ``reports/``;
    5. prints the WCC / best-runtime table of the record.

    Needs a CUDA GPU and a CUDA torch (reused: run nox with that torch, or WCC_REUSE_TORCH=1);
    exits with an explanation where there is none. ``WCC_TIMING_ARGS`` replaces the timing grid
    (``""``: the full grid, longer). Triton is not installed on a Jetson (NVIDIA ships none).
    """
    _provide_torch(session)
    version, cuda_build, available, count = _cuda_probe(session)
    if not available:
        session.error(
            f"bench_gpu needs a CUDA GPU, and torch {version} (CUDA build: {cuda_build}) sees none on this "
            f"machine ({count} devices). Run `nox -s bench_cpu` here; on a CUDA machine run bench_gpu with its "
            "CUDA torch reused (WCC_REUSE_TORCH=1) or WCC_TORCH pointing at a CUDA build."
        )
    extras = "test,bench,report,cpu,runtimes" if _on_jetson() else "test,bench,report,cpu,triton,runtimes"
    session.install("-e", f".[{extras}]")
    session.run("python", "-m", "wcc.info")
    session.run("python", "-m", "wcc.backends.cuda_build", "--quiet")
    session.run("python", "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_conformance.py",
                "--device", "cuda")
    session.run("python", "-m", "pytest", "-q", "-p", "no:cacheprovider", "--run-gpu", "-m", "gpu", "tests")
    import shlex

    name = f"cuda-{_timing_stamp()}"
    timing_args = shlex.split(os.environ.get("WCC_TIMING_ARGS", BENCH_GPU_TIMING_ARGS))
    session.run("python", "-m", "bench", "timing", "--device", "cuda", "--out", "results", "--name", name,
                *timing_args, *session.posargs)
    session.run("python", "-m", "bench", "report", "--results", "results", "--out", "reports")
    session.run("python", "-c", _PRINT_TABLES, os.path.join("results", "timing", f"{name}.json"))


@nox.session(venv_params=VENV_PARAMS)
def reproduce_tables(session: nox.Session) -> None:
    """Rebuild the Cityscapes and KITTI tables (default: SynthStreets 512x1024 on CPU from the shipped
    FP32 checkpoints, ~20 min).

    Arguments after ``--`` go to ``python -m bench tables`` (e.g. ``-- --profile paper
    --data-root /data``; ``-- --help`` lists them). Interrupted? Run it again: it resumes.
    """
    _install(session, "data,bench")
    session.run("python", "-m", "bench", "tables", *session.posargs)


@nox.session(venv_params=VENV_PARAMS)
def report(session: nox.Session) -> None:
    """Versioned HTML reports from ``results/`` into ``reports/`` (open ``reports/index.html``).

    Arguments after ``--`` go to ``python -m bench report`` (e.g. ``-- --version 0.1.0+1a2b3c4d``
    or ``-- --factor 1.2``). Compare two results with ``python -m bench compare BASE NEW``.
    """
    _install(session, "report,bench,data")
    session.run("python", "-m", "bench", "report", "--results", "results", "--out", "reports", *session.posargs)
