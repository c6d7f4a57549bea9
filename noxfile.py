"""nox sessions of wcc-bench. ``nox -l`` lists them; ``nox -s NAME -- ARGS`` passes ARGS through.

Torch handling (the one heavy dependency):

* If the Python running nox can already import torch (a CUDA, ROCm or Jetson build, say), the
  session virtualenvs are created with ``--system-site-packages`` and reuse it: nothing
  replaces your torch. Force this with ``WCC_REUSE_TORCH=1`` (or forbid it with ``=0``).
* Otherwise the sessions install ``$WCC_TORCH`` (default ``torch==2.13.0``; on a machine
  whose pip finds only CUDA wheels, point it at the build you want, e.g. a CPU wheel file).
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


@nox.session(venv_params=VENV_PARAMS)
def tests(session: nox.Session) -> None:
    """The test suite (fast tests; add ``-- --run-slow`` for the slow ones)."""
    _install(session, "test")
    session.run("python", "-m", "pytest", *(session.posargs or ["-q"]))


@nox.session(venv_params=VENV_PARAMS)
def smoke(session: nox.Session) -> None:
    """Build a WCC layer and check it against the dense conv (a 10-second sanity check)."""
    _install(session, "test")
    session.run("python", "-m", "wcc.info")
    session.run("python", "-m", "pytest", "-q", "tests/test_layers.py", *session.posargs)


@nox.session(venv_params=VENV_PARAMS)
def build(session: nox.Session) -> None:
    """Pre-build the compiled kernels of the ``cpu`` backend into their cache (else: on first use)."""
    _install(session, "cpu")
    session.run("python", "-m", "wcc.backends.cpu_build", *session.posargs)


def _timing_stamp() -> str:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def _bench(session: nox.Session, device: str, default_timing_args: str) -> None:
    """The pytest-benchmark suite (posargs go to pytest), then ``python -m bench timing``.

    pytest-benchmark writes its JSON (a results-store record, see benchmarks/conftest.py) to
    ``results/pytest-benchmark/`` and autosaves a baseline in ``.benchmarks/`` for
    ``--benchmark-compare``. ``WCC_TIMING_ARGS`` replaces the timing command's default
    arguments; the timing command ends the session with its WCC / dense ratio table.
    """
    import shlex

    stamp = _timing_stamp()
    os.makedirs("results/pytest-benchmark", exist_ok=True)
    session.run("python", "-m", "pytest", "benchmarks", "-p", "no:cacheprovider", f"--bench-device={device}",
                f"--benchmark-json=results/pytest-benchmark/{device}-{stamp}.json", "--benchmark-autosave",
                *session.posargs)
    timing_args = shlex.split(os.environ.get("WCC_TIMING_ARGS", default_timing_args))
    session.run("python", "-m", "bench", "timing", "--device", device, "--out", "results",
                "--name", f"{device}-{stamp}", *timing_args)


@nox.session(venv_params=VENV_PARAMS)
def bench_cpu(session: nox.Session) -> None:
    """CPU timing: pytest-benchmark suite + ``bench timing --quick`` (full grid: WCC_TIMING_ARGS="").

    Compare against a saved baseline: ``nox -s bench_cpu -- --benchmark-compare
    --benchmark-compare-fail=median:15%``.
    """
    _install(session, "bench,cpu,runtimes")
    _bench(session, "cpu", "--quick")


@nox.session(venv_params=VENV_PARAMS)
def bench_gpu(session: nox.Session) -> None:
    """CUDA timing: pytest-benchmark suite + the full ``bench timing`` grid (float16/bfloat16).

    Needs a CUDA GPU; exits with an explanation where there is none.
    """
    import re

    _provide_torch(session)
    probe = ("import torch; print('cuda-probe', torch.__version__, torch.version.cuda or 'none', "
             "int(torch.cuda.is_available()), torch.cuda.device_count())")
    out = session.run("python", "-c", probe, silent=True)
    # The marker skips any warning torch prints while probing the driver.
    version, cuda_build, available, count = re.search(r"cuda-probe (\S+) (\S+) (\d) (\d+)", out).groups()
    if available != "1":
        session.error(
            f"bench_gpu needs a CUDA GPU, and torch {version} (CUDA build: {cuda_build}) sees none on this "
            f"machine ({count} devices). Run `nox -s bench_cpu` here; on a CUDA machine run bench_gpu with its "
            "CUDA torch reused (WCC_REUSE_TORCH=1) or WCC_TORCH pointing at a CUDA build."
        )
    session.install("-e", ".[bench,triton,runtimes]")
    _bench(session, "cuda", "")


@nox.session(venv_params=VENV_PARAMS)
def reproduce_tables(session: nox.Session) -> None:
    """Rebuild the Cityscapes and KITTI tables (default: SynthStreets on CPU, ~20 min).

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
