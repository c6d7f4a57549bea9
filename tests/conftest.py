"""Shared pytest options and fixtures.

Options: ``--run-slow``, ``--run-gpu`` and ``--run-slurm`` enable the ``slow``/``gpu``/``slurm`` markers (off by default:
such tests are reported as *skipped*, never silently passed); ``--device`` and ``--dtype`` pick
where the backend-agnostic layer tests run (default cpu / float32).
"""

from __future__ import annotations

import pytest
import torch


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", help="run tests marked slow")
    parser.addoption("--run-gpu", action="store_true", help="run tests marked gpu (needs CUDA)")
    parser.addoption("--run-slurm", action="store_true",
                     help="run tests marked slurm (start munged/slurmctld/slurmd; needs slurm-wlm and munge)")
    parser.addoption("--device", default="cpu", help="device for layer tests (cpu, cuda)")
    parser.addoption("--dtype", default="float32", choices=["float32", "float64", "bfloat16", "float16"],
                     help="dtype for layer tests")


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
    dev = torch.device(request.config.getoption("--device"))
    if dev.type == "cuda" and not torch.cuda.is_available():
        pytest.skip("--device cuda given but CUDA is not available")
    return dev


@pytest.fixture
def dtype(request: pytest.FixtureRequest) -> torch.dtype:
    return getattr(torch, request.config.getoption("--dtype"))


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
