"""Model benchmarks: DeepLabV3+-MobileNetV2 inference, dense vs 8/8 vs WCC (each backend).

Quick grid (default): dense and WCC 25% at 128x256 on the CPU, 512x1024 on CUDA; ``--bench-full``
runs every variant at 512x1024 (CPU) or 1024x2048 (CUDA), as :func:`bench.timing.model.model_cases`.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from bench.timing._timer import synchronize
from bench.timing.layer import available_backends
from bench.timing.model import ModelCase, build_model, model_cases


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "model_case" not in metafunc.fixturenames:
        return
    device = metafunc.config.getoption("--bench-device")
    backends, _ = available_backends(device)
    cases = model_cases(device, quick=not metafunc.config.getoption("--bench-full"), backends=backends)
    metafunc.parametrize("model_case", cases,
                         ids=[f"{c.label}-{c.backend or 'torch'}-{c.height}x{c.width}".replace(" ", "") for c in cases])


def test_model_forward(benchmark: Any, model_case: ModelCase, bench_device: torch.device,
                       bench_rounds: tuple[int, int], record_result: Any) -> None:
    from wcc.backends import BackendUnavailableError

    try:
        model = build_model(model_case, bench_device)
    except BackendUnavailableError as exc:
        pytest.skip(str(exc))
    dtype = next(model.parameters()).dtype
    x = torch.randn(model_case.batch, 3, model_case.height, model_case.width,
                    generator=torch.Generator().manual_seed(0)).to(bench_device, dtype)

    def run() -> None:
        with torch.no_grad():
            model(x)
        synchronize(bench_device)  # inside the timed region

    case = f"{model_case.model}:{model_case.height}x{model_case.width}:{model_case.dtype}"
    op = "dense" if model_case.variant == "dense" else model_case.label
    benchmark.group = case
    benchmark.extra_info.update(case=case, op=op, backend=model_case.backend, variant=model_case.label,
                                input=[model_case.batch, 3, model_case.height, model_case.width])
    rounds, warmup = bench_rounds
    benchmark.pedantic(run, rounds=max(3, rounds // 3), warmup_rounds=min(warmup, 1), iterations=1)
    record_result({"case": case, "op": op, "variant": model_case.label, "backend": model_case.backend},
                  benchmark.stats.stats.median)
