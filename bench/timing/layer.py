"""Layer timing: WCC (every available backend) vs the best dense 1x1 conv vs QuantConv2d.

For each case group ``(shape set, shape, direction, dtype)`` one input and one source conv are
built, and every op runs on them in the same process:

* ``dense_nchw`` - ``F.conv2d`` on contiguous NCHW tensors;
* ``dense_cl`` - ``F.conv2d`` on channels_last input and weight;
* ``matmul`` - the conv as a plain batched GEMM, ``W (C_out, C_in) @ x (N, C_in, H*W)`` + bias;
* ``quantconv`` - :class:`wcc.layers.QuantConv2d` at 8/8 (the quantized dense layer);
* ``wcc`` - :class:`wcc.layers.WCCConv2d` at 8/8 for each backend, keep ratio and level count;
* the deployed dense baselines of :mod:`bench.timing.runtimes` (ONNX Runtime FP32 and static
  int8, ``torch.compile``, OpenVINO, TensorRT), forward only, on the same conv and input.

Every row carries ``ratio_to_best_runtime``: its median over the fastest dense baseline of the
group, eager or deployed, any precision (the figure the report leads with), and, secondary,
``ratio_to_dense`` over the fastest of the three eager dense ops; both come from the one
baseline rule, :func:`bench.baseline.best_dense`. Rows also record ``runtime`` (package and
version) and ``precision``; they are :class:`bench.rows.LayerRow` (the typed definition behind
the store's schema). ``fwdbwd`` times forward plus backward to the input and every parameter
(``torch.autograd.grad``, so no gradient accumulation is timed). A case that cannot run (a
backend refuses it, an error, out of memory) becomes a row with ``error`` set instead of a crash.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from bench.baseline import BASELINE_OPS, DENSE_OPS, best_dense, ratio_to
from bench.rows import DIRECTIONS, LAYER_OPS, RUNTIME_OPS, LayerRow, check_one_of
from bench.timing.harness import time_callable
from bench.timing.runtimes import RuntimeUnavailableError, build_runtime, max_rel_err, precision_of, runtime_version
from bench.timing.shapes import ConvShape, shape_set

__all__ = [
    "OPS",
    "DENSE_OPS",
    "LayerCase",
    "LayerGrid",
    "CaseGroup",
    "default_grid",
    "available_backends",
    "run_layer_benchmarks",
    "add_ratios",
    "forced_backend_error",
    "error_text",
]

OPS = LAYER_OPS
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class LayerCase:
    """One timed row. ``backend``/``keep_ratio``/``levels`` are set for ``op="wcc"`` only."""

    shape_set: str
    shape: ConvShape
    op: str
    direction: str = "fwd"
    dtype: str = "float32"
    backend: str | None = None
    keep_ratio: float | None = None
    levels: int | None = None

    def __post_init__(self) -> None:
        check_one_of("op", self.op, OPS)
        check_one_of("direction", self.direction, DIRECTIONS)
        if self.op in RUNTIME_OPS and self.direction != "fwd":
            raise ValueError(f"runtime baseline {self.op!r} is inference only (direction 'fwd')")
        check_one_of("dtype", self.dtype, DTYPES)
        if (self.op == "wcc") != (self.backend is not None and self.keep_ratio is not None and self.levels is not None):
            raise ValueError("backend, keep_ratio and levels are required for op='wcc' and only for it")

    @property
    def group(self) -> tuple[str, ConvShape, str, str]:
        return (self.shape_set, self.shape, self.direction, self.dtype)

    @property
    def label(self) -> str:
        op = f"wcc[{self.backend} k={self.keep_ratio:g} J={self.levels}]" if self.op == "wcc" else self.op
        return f"{self.shape.label} {self.direction} {self.dtype} {op}"

    def to_row(self) -> dict[str, Any]:
        if self.op in RUNTIME_OPS:
            runtime, precision = runtime_version(self.op) or "not installed", precision_of(self.op, self.dtype)
        else:
            runtime = f"torch {torch.__version__} (eager)"
            precision = "int8" if self.op in ("wcc", "quantconv") else {"float32": "fp32", "float16": "fp16",
                                                                         "bfloat16": "bf16"}[self.dtype]
        return {"shape_set": self.shape_set, "shape": self.shape.to_dict(), "shape_label": self.shape.label,
                "op": self.op, "direction": self.direction, "dtype": self.dtype, "backend": self.backend,
                "keep_ratio": self.keep_ratio, "levels": self.levels, "runtime": runtime, "precision": precision}


@dataclass(frozen=True)
class LayerGrid:
    """The cases to time. ``backends=None`` means every backend available on this machine;
    ``fwdbwd_per_set`` limits forward+backward to the first N shapes of each set (None: all);
    ``runtimes`` are the deployed dense baselines (bench.timing.runtimes) timed in every forward
    group."""

    shape_sets: tuple[str, ...]
    keep_ratios: tuple[float, ...] = (1.0, 0.5, 0.25, 0.125)
    levels: tuple[int, ...] = (1, 2, 3)
    directions: tuple[str, ...] = DIRECTIONS
    dtypes: tuple[str, ...] = ("float32",)
    backends: tuple[str, ...] | None = None
    fwdbwd_per_set: int | None = None
    runtimes: tuple[str, ...] = ()
    shapes: dict[str, tuple[ConvShape, ...]] = field(default_factory=dict, compare=False)

    def resolved_shapes(self) -> dict[str, list[ConvShape]]:
        return {name: list(self.shapes[name]) if name in self.shapes else shape_set(name) for name in self.shape_sets}

    def cases(self, backends: Iterable[str]) -> list[LayerCase]:
        """Every case, grouped so each group's ops run back to back on one input."""
        backends = list(backends)
        out = []
        for set_name, shapes in self.resolved_shapes().items():
            for i, shape in enumerate(shapes):
                for direction, dtype in itertools.product(self.directions, self.dtypes):
                    if direction == "fwdbwd" and self.fwdbwd_per_set is not None and i >= self.fwdbwd_per_set:
                        continue
                    base: dict[str, Any] = {"shape_set": set_name, "shape": shape, "direction": direction,
                                            "dtype": dtype}
                    out += [LayerCase(op=op, **base) for op in (*DENSE_OPS, "quantconv")]
                    if direction == "fwd":
                        out += [LayerCase(op=op, **base) for op in self.runtimes]
                    for backend, levels, keep in itertools.product(backends, self.levels, self.keep_ratios):
                        out.append(LayerCase(op="wcc", backend=backend, keep_ratio=keep, levels=levels, **base))
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"shape_sets": list(self.shape_sets), "keep_ratios": list(self.keep_ratios),
                "levels": list(self.levels), "directions": list(self.directions), "dtypes": list(self.dtypes),
                "backends": None if self.backends is None else list(self.backends),
                "fwdbwd_per_set": self.fwdbwd_per_set, "runtimes": list(self.runtimes)}


def default_grid(device: str, quick: bool) -> LayerGrid:
    """The layer grid (docs/design.md §7): model shape sets plus the extras, 4 keep ratios, J = 1..3, fwd and
    fwd+bwd, float32 on the CPU and float16/bfloat16 on CUDA. ``quick``: the three extra
    shapes, keep 1.0 and 0.25, J = 3, forward (plus forward+backward on the first shape)."""
    from bench.timing.runtimes import runtime_ops

    dtypes = ("float32",) if device == "cpu" else ("float16", "bfloat16")
    runtimes = runtime_ops(device)
    if quick:
        return LayerGrid(shape_sets=("extra",), keep_ratios=(1.0, 0.25), levels=(3,), dtypes=dtypes[:1],
                         fwdbwd_per_set=1, runtimes=runtimes)
    return LayerGrid(shape_sets=("deeplabv3plus-mobilenetv2@1024x2048", "depth-mobilenetv2@192x640", "extra"),
                     dtypes=dtypes, runtimes=runtimes)


def available_backends(device: str) -> tuple[list[str], list[dict[str, Any]]]:
    """(names of the backends that can run here, status of every registered backend)."""
    from wcc.backends import backend_status

    status: list[dict[str, Any]] = [
        {"name": s.name, "priority": s.priority, "available": s.available, "reason": s.reason}
        for s in backend_status()]
    return [s["name"] for s in status if s["available"]], status


class CaseGroup:
    """The shared input, source conv and output gradient of one ``(shape, direction, dtype)``."""

    def __init__(self, shape: ConvShape, direction: str, dtype: str, device: torch.device, seed: int = 0) -> None:
        self.shape, self.direction, self.device = shape, direction, device
        self.dtype = DTYPES[dtype]
        gen = torch.Generator().manual_seed(seed)
        n, c_in, c_out, h, w = shape.batch, shape.c_in, shape.c_out, shape.height, shape.width
        conv = nn.Conv2d(c_in, c_out, 1)
        weight = torch.randn(c_out, c_in, 1, 1, generator=gen) * c_in ** -0.5
        bias = torch.randn(c_out, generator=gen) * 0.1
        with torch.no_grad():  # seeded (the default init would draw from the global RNG)
            conv.weight.copy_(weight)
            conv.bias.copy_(bias)  # type: ignore[union-attr]
        self.conv = conv.to(device=device, dtype=self.dtype)
        # The source conv's parameters as plain tensors, for the dense ops.
        self.weight: torch.Tensor = self.conv.weight
        self.bias: torch.Tensor = self.conv.bias  # type: ignore[assignment]
        self.x = torch.randn(n, c_in, h, w, generator=gen).to(device=device, dtype=self.dtype)
        self.grad_out = torch.randn(n, c_out, h, w, generator=gen).to(device=device, dtype=self.dtype) \
            if direction == "fwdbwd" else None

    def _leaf(self, t: torch.Tensor, memory_format: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
        return t.detach().contiguous(memory_format=memory_format).requires_grad_(self.direction == "fwdbwd")

    def callable(self, case: LayerCase) -> Callable[[], Any]:
        """A zero-argument callable running ``case`` once; raises ``BackendUnavailableError``
        when the case's WCC backend refuses it and ``RuntimeUnavailableError`` when a deployed
        baseline cannot run. A runtime case leaves ``max_rel_err`` (against eager float32) and
        ``setup_s`` (export, calibration, compilation) in :attr:`extra`."""
        self.extra: dict[str, Any] = {}
        if case.op in RUNTIME_OPS:
            import copy

            built = build_runtime(case.op, copy.deepcopy(self.conv), self.x, self.device)
            with torch.no_grad():
                ref = F.conv2d(self.x.float(), self.weight.float(), self.bias.float())
            self.extra = {"max_rel_err": max_rel_err(built.output, ref), "setup_s": built.setup_s}
            return built.fn
        forward, inputs = self._forward(case)
        if self.direction == "fwd":
            def run() -> Any:
                with torch.no_grad():
                    return forward()
            return run
        assert self.grad_out is not None  # set for fwdbwd groups
        grad_out = self.grad_out.contiguous(memory_format=torch.channels_last) if case.op == "dense_cl" \
            else self.grad_out

        def run_bwd() -> Any:
            return torch.autograd.grad(forward(), inputs, grad_out, allow_unused=True)
        return run_bwd

    def _forward(self, case: LayerCase) -> tuple[Callable[[], torch.Tensor], list[torch.Tensor]]:
        from wcc.config import WCCConfig
        from wcc.layers import QuantConv2d, WCCConv2d

        conv = self.conv
        if case.op == "dense_nchw":
            x, w, b = self._leaf(self.x), self._leaf(self.weight), self._leaf(self.bias)
            return (lambda: F.conv2d(x, w, b)), [x, w, b]
        if case.op == "dense_cl":
            cl = torch.channels_last
            x, w, b = self._leaf(self.x, cl), self._leaf(self.weight, cl), self._leaf(self.bias)
            return (lambda: F.conv2d(x, w, b)), [x, w, b]
        if case.op == "matmul":
            n, c_in, h, w_ = self.x.shape
            x = self._leaf(self.x)
            w = self._leaf(self.weight.flatten(1))  # (C_out, C_in)
            b = self._leaf(self.bias)
            c_out = w.shape[0]
            # baddbmm fuses the bias into the GEMM, as the conv does.
            return (lambda: torch.baddbmm(b.view(1, c_out, 1), w.expand(n, c_out, c_in), x.view(n, c_in, h * w_))
                    .view(n, c_out, h, w_)), [x, w, b]
        layer: QuantConv2d | WCCConv2d
        if case.op == "quantconv":
            layer = QuantConv2d.from_conv2d(conv, weight_bits=8, act_bits=8)
        else:
            assert case.backend is not None and case.keep_ratio is not None and case.levels is not None
            layer = WCCConv2d.from_conv2d(conv, WCCConfig(levels=case.levels, keep_ratio=case.keep_ratio,
                                                          backend=case.backend))
            _check_backend(self.x, layer.config)
        layer.requires_grad_(self.direction == "fwdbwd")
        x = self._leaf(self.x)
        return (lambda: layer(x)), [x, *layer.parameters()]


def forced_backend_error(backend: str) -> str | None:
    """Why ``backend`` cannot be timed under a ``WCC_BACKEND`` override (it would silently force
    another backend and mislabel every row), or None."""
    from wcc.backends import ENV_VAR, forced_backend

    forced = forced_backend()
    if forced and forced != backend:
        return f"{ENV_VAR}={forced} forces backend {forced!r}; unset it to time {backend!r}"
    return None


def _check_backend(x: torch.Tensor, config: Any) -> None:
    """Refuse early, with the registry's reason, when the case's backend cannot run it."""
    from wcc.backends import BackendUnavailableError, select_backend

    why = forced_backend_error(config.backend)
    if why:
        raise BackendUnavailableError(why)
    select_backend(x, config)


def error_text(exc: BaseException) -> str:
    """The ``error`` of a row that could not run: a backend's own reason, else type and message."""
    from wcc.backends import BackendUnavailableError

    if isinstance(exc, (BackendUnavailableError, RuntimeUnavailableError)):
        return str(exc)
    return f"{type(exc).__name__}: {exc}".strip()


def _layer_group(row: dict[str, Any]) -> tuple[str, str, str, str]:
    return (row["shape_set"], row["shape_label"], row["direction"], row["dtype"])


def add_ratios(rows: list[dict[str, Any]]) -> None:
    """Set ``ratio_to_dense``, ``dense_op`` and ``dense_median_s`` on every row, in place: the
    reference of a group (shape set, shape, direction, dtype) is its fastest eager dense op
    (None when no dense op ran).

    Also ``ratio_to_best_runtime``, ``best_runtime_op`` and ``best_runtime_median_s``: the same
    over every dense baseline of the group (:data:`bench.baseline.BASELINE_OPS`: eager and the
    deployed runtimes, every precision). Runtimes are inference only, so in ``fwdbwd`` groups
    this is the eager reference again. Both are :func:`bench.baseline.best_dense`."""
    median = lambda r: r.get("median_s")  # noqa: E731
    eager = best_dense(rows, _layer_group, lambda r: r["op"], median)
    deployed = best_dense(rows, _layer_group, lambda r: r["op"], median, dense_ops=BASELINE_OPS)
    for r in rows:
        b, fastest = eager.get(_layer_group(r)), deployed.get(_layer_group(r))
        r.update(dense_op=b and b["op"], dense_median_s=b and b["median_s"], ratio_to_dense=ratio_to(r, b),
                 best_runtime_op=fastest and fastest["op"], best_runtime_median_s=fastest and fastest["median_s"],
                 ratio_to_best_runtime=ratio_to(r, fastest))


def run_layer_benchmarks(
    cases: list[LayerCase],
    device: str | torch.device = "cpu",
    timer: dict[str, Any] | None = None,
    meter: Any = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Time every case; returns one stored row per case (:class:`bench.rows.LayerRow`, as a dict)."""
    from wcc.train._progress import progress_bar  # a bar on a tty, a plain line every few percent in a log

    device = torch.device(device)
    timer = dict(timer or {})
    rows: list[dict[str, Any]] = []
    group: CaseGroup | None = None
    fn: Callable[[], Any] | None = None
    bar = progress_bar(len(cases), "layers", enabled=progress, unit="case")
    for case in cases:
        bar.set_postfix_str(case.label, refresh=False)
        row: dict[str, Any] = {}
        try:
            if group is None or (group.shape, group.direction, group.dtype) != (case.shape, case.direction,
                                                                                 DTYPES[case.dtype]):
                group = None
                _free(device)
                group = CaseGroup(case.shape, case.direction, case.dtype, device)
            fn = group.callable(case)
            row.update(group.extra)
            # The meter's window wraps the samples only, not the warm-up.
            window = meter.window() if meter is not None and meter.available else None
            timing = time_callable(fn, device, window=window, **timer)
            row.update(timing.to_dict(), energy=window.to_dict() if window is not None else None)
        except Exception as exc:  # noqa: BLE001 - one failing case must not end the run
            row["error"] = error_text(exc)  # the row's defaults for the rest: nothing timed
            if isinstance(exc, torch.OutOfMemoryError):
                group = None
        finally:
            fn = None  # noqa: F841 - drop the layer before the next case allocates
        rows.append(LayerRow(**case.to_row(), **row).to_dict())
        bar.update(1)
    bar.close()
    _free(device)
    add_ratios(rows)
    return rows


def _free(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
