"""Layer benchmarks: WCC (each available backend) vs dense 1x1 conv ops vs QuantConv2d.

Cases come from :func:`bench.timing.layer.default_grid` (the quick grid unless ``--bench-full``),
so the suite and ``python -m bench timing`` time the same things. Each benchmark's callable
synchronises the device before it returns, so the timed region covers the device work.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from bench.timing._timer import synchronize
from bench.timing.layer import CaseGroup, LayerCase, available_backends, default_grid

_GROUP: dict[str, Any] = {}  # the CaseGroup of the previous case (cases arrive group by group)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "layer_case" not in metafunc.fixturenames:
        return
    device = metafunc.config.getoption("--bench-device")
    grid = default_grid(device, quick=not metafunc.config.getoption("--bench-full"))
    backends, _ = available_backends(device)
    cases = grid.cases(backends)
    metafunc.parametrize("layer_case", cases, ids=[c.label.replace(" ", "-") for c in cases])


def _group(case: LayerCase, device: torch.device) -> CaseGroup:
    key = (case.shape, case.direction, case.dtype, device)
    if _GROUP.get("key") != key:
        _GROUP.clear()  # free the previous input before allocating the next
        _GROUP.update(key=key, group=CaseGroup(case.shape, case.direction, case.dtype, device))
    return _GROUP["group"]


def test_layer(benchmark: Any, layer_case: LayerCase, bench_device: torch.device,
               bench_rounds: tuple[int, int], record_result: Any) -> None:
    from wcc.backends import BackendUnavailableError

    try:
        fn = _group(layer_case, bench_device).callable(layer_case)
    except BackendUnavailableError as exc:
        pytest.skip(f"backend {layer_case.backend!r} cannot run this case: {exc}")

    def run() -> None:
        fn()
        synchronize(bench_device)  # inside the timed region

    case = f"{layer_case.shape_set}:{layer_case.shape.label}:{layer_case.direction}:{layer_case.dtype}"
    benchmark.group = case
    benchmark.extra_info.update(case=case, op=layer_case.op, backend=layer_case.backend,
                                keep_ratio=layer_case.keep_ratio, levels=layer_case.levels,
                                shape=layer_case.shape.to_dict(), direction=layer_case.direction,
                                dtype=layer_case.dtype)
    rounds, warmup = bench_rounds
    benchmark.pedantic(run, rounds=rounds, warmup_rounds=warmup, iterations=1)
    label = layer_case.op if layer_case.op != "wcc" else f"wcc k={layer_case.keep_ratio:g} J={layer_case.levels}"
    record_result({"case": case, "op": layer_case.op, "variant": label, "backend": layer_case.backend},
                  benchmark.stats.stats.median)
