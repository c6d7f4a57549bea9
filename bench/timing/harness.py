"""The one timing harness: warm-up, device synchronisation inside the timed region, median and IQR.

Everything the suite times goes through :func:`time_callable`: the layer and model grids of
``python -m bench timing``, the backend self-benchmark (:mod:`bench.timing.backend_bench`) and
the asv benchmarks' cases (asv keeps its own clock: it is the per-commit tool). The methodology
is written once, in ``bench/README.md``.

Rules (docs/design.md §7): warm up first (lazy initialisation, autotuning, JIT builds and caches must not
land in the samples); a sample ends only when the device has finished the work, so on CUDA each
sample is bracketed by CUDA events recorded on the stream and read after the end event has
completed; report the median and the interquartile range over several samples and keep the raw
samples. They describe one process; regression verdicts are computed on rounds (fresh processes,
:mod:`bench.timing.rounds`), never on them.

Very short calls are repeated ``number`` times per sample (calibrated once, like ``timeit``) so
that one sample is long enough for the clock; each sample is the time *per call*.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import math
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

__all__ = ["Timing", "median_iqr", "time_callable", "synchronize", "CLOCKS"]


@dataclass(frozen=True)
class Timing:
    """Samples in seconds per call; ``number`` calls were averaged into each sample."""

    samples: tuple[float, ...]
    number: int
    warmup: int

    @property
    def n_samples(self) -> int:
        return len(self.samples)

    @property
    def median(self) -> float:
        return median_iqr(self.samples)[0]

    @property
    def iqr(self) -> float:
        return median_iqr(self.samples)[1]

    def to_dict(self) -> dict[str, Any]:
        med, iqr = median_iqr(self.samples)
        return {"median_s": med, "iqr_s": iqr, "n_samples": self.n_samples, "samples": list(self.samples),
                "number": self.number, "warmup": self.warmup}


def median_iqr(samples: "list[float] | tuple[float, ...]") -> tuple[float, float]:
    """(median, Q3 - Q1) of ``samples`` (``numpy.percentile``, linear interpolation); one
    sample has an IQR of 0."""
    if not len(samples):
        raise ValueError("median_iqr needs at least one sample")
    q1, med, q3 = np.percentile(np.asarray(samples, dtype=float), (25, 50, 75))
    return float(med), float(q3 - q1)


def synchronize(device: torch.device) -> None:
    """Wait until ``device`` has finished all queued work (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _sample_cpu(fn: Callable[[], Any], number: int, clock: Callable[[], float] = time.perf_counter) -> float:
    t0 = clock()
    for _ in range(number):
        fn()
    return (clock() - t0) / number


#: CPU clocks: ``wall`` (``time.perf_counter``, the latency a user sees) or ``process`` (CPU time
#: of this process, ``time.process_time``, as asv uses on a shared machine: time spent descheduled
#: while another tenant runs does not count; with one torch thread it is the work done).
CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "process": time.process_time}


def _sample_cuda(fn: Callable[[], Any], number: int) -> float:
    # Events are timestamped on the GPU stream, so host-side launch overhead that overlaps
    # the kernels does not count, and the end event covers every kernel the calls queued.
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(number):
        fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / 1e3 / number


def time_callable(
    fn: Callable[[], Any],
    device: torch.device | str = "cpu",
    *,
    warmup: int = 2,
    min_samples: int = 5,
    max_samples: int = 50,
    budget_s: float = 1.0,
    min_sample_s: float | None = None,
    window: "contextlib.AbstractContextManager[Any] | None" = None,
    clock: str = "wall",
) -> Timing:
    """Time ``fn()`` on ``device``.

    Args:
        fn: the work; must queue everything it does on ``device``'s current stream.
        warmup: untimed calls first (at least one; it also calibrates ``number``).
        min_samples / max_samples: bounds on the sample count.
        budget_s: keep sampling while the samples took less than this (then stop at
            ``min_samples``), so fast cases get more samples than slow ones.
        window: a context entered around the samples only (not the warm-up), e.g. an
            energy-meter window.
        min_sample_s: shortest sample; shorter calls are repeated. Default 1 ms on the CPU
            (``perf_counter`` resolution and scheduler noise) and 0.1 ms with CUDA events.
        clock: the CPU clock, one of :data:`CLOCKS` (CUDA samples always use events).
    """
    device = torch.device(device)
    if min_samples < 1 or max_samples < min_samples:
        raise ValueError(f"need 1 <= min_samples <= max_samples, got {min_samples}, {max_samples}")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"time_callable supports cpu and cuda devices, not {device}")
    if clock not in CLOCKS:
        raise ValueError(f"clock must be one of {tuple(CLOCKS)}, got {clock!r}")
    if device.type == "cuda":
        sample = _sample_cuda
    else:
        sample = functools.partial(_sample_cpu, clock=CLOCKS[clock])
    if min_sample_s is None:
        min_sample_s = 1e-4 if device.type == "cuda" else 1e-3

    warmup = max(1, warmup)
    for _ in range(warmup - 1):
        fn()
    synchronize(device)
    t0 = time.perf_counter()
    fn()
    synchronize(device)
    once = max(time.perf_counter() - t0, 1e-9)
    number = max(1, min(10_000, math.ceil(min_sample_s / once)))

    # No garbage collection inside the timed region (as timeit does): a collection would land
    # in one random sample; it still runs between cases.
    gc_was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        samples: list[float] = []
        spent = 0.0
        with window if window is not None else contextlib.nullcontext():
            while len(samples) < max_samples and (len(samples) < min_samples or spent < budget_s):
                t = sample(fn, number)
                samples.append(t)
                spent += t * number
    finally:
        if gc_was_enabled:
            gc.enable()
    return Timing(tuple(samples), number, warmup)
