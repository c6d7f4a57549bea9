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


def _install(session: nox.Session, extras: str) -> None:
    """Install torch (unless reused) and then the project with ``extras``, editable."""
    if REUSE_TORCH:
        session.run("python", "-c", "import torch; print('reusing torch', torch.__version__)")
    else:
        session.install(TORCH_SPEC)
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
