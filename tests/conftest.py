"""Shared pytest options and fixtures.

Options: ``--run-slow``, ``--run-gpu`` and ``--run-slurm`` enable the ``slow``/``gpu``/``slurm``
markers (off by default: such tests are reported as *skipped*, never silently passed).

``--device`` and ``--dtype`` select where the backend conformance battery
(``tests/test_conformance.py``) runs, and what the ``device``/``dtype`` fixtures return:

* ``--device``: ``cpu`` (default) or ``cuda`` (``cuda:N``); a CUDA device that is not available
  turns those tests into skips that say so.
* ``--dtype``: one dtype or a comma-separated list. Default: the device's set, ``float32,float64``
  on CPU (float64 is where the fast backends must match the reference to 1e-10) and
  ``float32,float16,bfloat16`` on CUDA. The ``dtype`` fixture returns the first one.
"""

from __future__ import annotations

import pytest
import torch


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", help="run tests marked slow")
    parser.addoption("--run-gpu", action="store_true", help="run tests marked gpu (needs CUDA)")
    parser.addoption("--run-slurm", action="store_true",
                     help="run tests marked slurm (start munged/slurmctld/slurmd; needs slurm-wlm and munge)")
    parser.addoption("--device", default="cpu",
                     help="device of the conformance battery and the device fixture: cpu (default) or cuda[:N]")
    parser.addoption("--dtype", default=None,
                     help="dtype(s) of the conformance battery, comma-separated (float32, float64, float16, "
                          "bfloat16); default: float32,float64 on cpu, float32,float16,bfloat16 on cuda")


DTYPE_NAMES = ("float32", "float64", "float16", "bfloat16")
DEFAULT_DTYPES = {"cpu": ("float32", "float64"), "cuda": ("float32", "float16", "bfloat16")}


def selected_device(config: pytest.Config) -> torch.device:
    """The ``--device`` option as a torch.device (validated; availability is checked by the tests)."""
    text = config.getoption("--device")
    try:
        dev = torch.device(text)
    except RuntimeError as exc:
        raise pytest.UsageError(f"--device {text!r} is not a device: {exc}") from None
    if dev.type not in DEFAULT_DTYPES:
        raise pytest.UsageError(f"--device {text!r}: use cpu or cuda[:N]")
    return dev


def selected_dtypes(config: pytest.Config) -> list[torch.dtype]:
    """The ``--dtype`` option (or the device's default set) as torch dtypes."""
    text = config.getoption("--dtype")
    names = text.split(",") if text else list(DEFAULT_DTYPES[selected_device(config).type])
    bad = [n for n in names if n.strip() not in DTYPE_NAMES]
    if bad:
        raise pytest.UsageError(f"--dtype: unknown {', '.join(bad)} (choose from {', '.join(DTYPE_NAMES)})")
    return [getattr(torch, n.strip()) for n in names]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    run_slow = config.getoption("--run-slow")
    run_gpu = config.getoption("--run-gpu")
    run_slurm = config.getoption("--run-slurm")
    has_cuda = torch.cuda.is_available()
    for item in items:
        if "slow" in item.keywords and not run_slow:
            item.add_marker(pytest.mark.skip(reason="slow: run with --run-slow"))
        if "slurm" in item.keywords and not run_slurm:
            item.add_marker(pytest.mark.skip(reason="slurm: run with --run-slurm (needs slurm-wlm and munge)"))
        if "gpu" in item.keywords:
            if not run_gpu:
                item.add_marker(pytest.mark.skip(reason="gpu: run with --run-gpu on a CUDA machine"))
            elif not has_cuda:
                item.add_marker(pytest.mark.skip(reason="gpu: torch.cuda.is_available() is False here"))


@pytest.fixture
def device(request: pytest.FixtureRequest) -> torch.device:
    dev = selected_device(request.config)
    if dev.type == "cuda" and not torch.cuda.is_available():
        pytest.skip("--device cuda given but CUDA is not available")
    return dev


@pytest.fixture
def dtype(request: pytest.FixtureRequest) -> torch.dtype:
    return selected_dtypes(request.config)[0]


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _no_machine_calibration(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Tests never read this machine's run-to-run calibration (bench.report.calibration): a
    ``nox -s gate_check`` run on the developer's machine must not change what compare decides."""
    monkeypatch.setenv("WCC_BENCH_CALIBRATION", str(tmp_path_factory.getbasetemp() / "no-calibration.json"))
