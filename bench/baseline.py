"""The best dense baseline: the one definition of what WCC's speed is measured against.

A WCC (or QuantConv2d) time means something only next to the fastest dense way of doing the
same work on the same machine in the same run, so a speed-up is never measured against a weak
baseline. The layer grid times three dense ops per shape (:data:`DENSE_OPS`); the model grid
one dense model per input and dtype. :func:`best_dense` picks the baseline for every group, and
every consumer uses it: the layer and model ratios (:mod:`bench.timing.layer`,
:mod:`bench.timing.model`) and the report's drift check (:mod:`bench.report.regressions`).
The deployed runtimes (ONNX Runtime, ``torch.compile``, OpenVINO, TensorRT) are such further
baselines: they join by being named in ``dense_ops`` (:data:`BASELINE_OPS`).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Hashable, Iterable, TypeVar

from bench.rows import RUNTIME_OPS

__all__ = ["DENSE_OPS", "BASELINE_OPS", "best_dense", "ratio_to"]

#: The eager dense 1x1 conv ops of the layer grid: NCHW conv2d, channels_last conv2d, a batched GEMM.
DENSE_OPS: tuple[str, ...] = ("dense_nchw", "dense_cl", "matmul")
#: Every dense baseline of a layer group: the eager ops and the deployed runtimes
#: (:mod:`bench.timing.runtimes`), every precision; ``ratio_to_best_runtime`` is taken over them.
BASELINE_OPS: tuple[str, ...] = (*DENSE_OPS, *RUNTIME_OPS)

T = TypeVar("T")


def best_dense(
    items: Iterable[T],
    group: Callable[[T], Hashable],
    op: Callable[[T], str | None],
    value: Callable[[T], float | None],
    dense_ops: Iterable[str] = DENSE_OPS,
) -> dict[Hashable, T]:
    """For each group, the dense item with the smallest time.

    Args:
        items: measurements (rows, or anything the accessors read).
        group: what an item is compared within (same shape, direction, dtype, machine, ...).
        op: the item's op; only ops in ``dense_ops`` can be the baseline.
        value: the item's time in seconds, None when it did not run; non-positive and NaN
            times never win.
    Returns:
        group -> the winning item (groups without a dense measurement are absent).
    """
    dense = frozenset(dense_ops)
    best: dict[Hashable, T] = {}
    best_value: dict[Hashable, float] = {}
    for item in items:
        if op(item) not in dense:
            continue
        v = value(item)
        if v is None or not v > 0 or math.isnan(v):
            continue
        g = group(item)
        if v < best_value.get(g, math.inf):
            best[g], best_value[g] = item, v
    return best


def ratio_to(row: dict[str, Any], baseline: dict[str, Any] | None) -> float | None:
    """``row``'s median over ``baseline``'s (None without a baseline or without a median)."""
    if baseline is None or row.get("median_s") is None:
        return None
    return float(row["median_s"]) / float(baseline["median_s"])
