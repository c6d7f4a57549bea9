"""Machine peaks and the measured floor of every timing row.

At the start of a timing run :func:`measure_peaks` measures three numbers of *this* machine,
recorded in the record's ``environment.peaks``:

* ``bandwidth_Bps`` - memory bandwidth: the best of a few copies of a 256 MiB (CPU) / 1 GiB
  (CUDA) float32 tensor into a preallocated one, counting the bytes read plus the bytes written;
* ``fp32_macs_per_s`` - float32 GEMM peak: the best of a few ``torch.mm`` of square matrices
  (2048 on the CPU, 8192 on CUDA), in multiply-accumulates per second;
* ``int8_macs_per_s`` - int8 GEMM peak: the best of ``torch._int_mm`` (int8 x int8 -> int32)
  and, on the CPU where onnxruntime is installed, ONNX Runtime's ``MatMulInteger`` (uint8 x int8
  -> int32, its MLAS kernels), each on square matrices of the same size. On a CPU without int8 dot
  products (AVX2) ``torch._int_mm`` is a generic loop while ONNX Runtime multiplies int8 faster than
  ``torch.mm`` multiplies float32; a floor from either of the first two alone sat above ONNX
  Runtime int8's measured time there. On CUDA also ``fp16_macs_per_s``.

The floor of a row (:func:`roofline_s`) is the time no implementation on this machine can beat
given what the row has to do, under perfect overlap of memory traffic and arithmetic::

    floor_s = max(bytes_moved / bandwidth_Bps, macs / peak_macs_per_s[precision])

For a 1x1 conv of ``(N, C_in, H, W) -> (N, C_out, H, W)`` with ``e`` bytes per activation
element (4 for float32, the interface every variant keeps) and ``w`` bytes per weight:

* dense: ``bytes = e*N*H*W*(C_in + C_out) + w*C_out*C_in``, ``macs = N*H*W*C_in*C_out``;
* WCC (keep ratio ``r``, ``J`` levels): read x once, write y once, and the kept-column GEMM:
  ``bytes = e*N*H*W*(C_in + C_out) + 1*C_out*C_in``,
  ``macs = N*C_out*C_in*max(1, floor(Hp*Wp*r))`` with ``Hp, Wp`` padded to a multiple of
  ``2**J`` (:func:`wcc.accounting.layer_costs`' count), at the int8 peak (8/8), or the float32
  peak where that is higher (:func:`peak_rate`).

A model's floor is the sum of the floors of its convolutions (:func:`model_floor_s`, shapes from
:func:`wcc.accounting.layer_costs`); everything else (BatchNorm, activations, the Haar
transforms, resizing) is left out, so it is a lower bound. ``floor_ratio`` = median / floor
(>= 1 up to measurement error; how far the row is from what the hardware allows).
"""

from __future__ import annotations

from typing import Any, Callable

import torch

__all__ = ["measure_peaks", "roofline_s", "conv_floor", "layer_floor", "model_floor_s", "add_floors", "safe_floor",
           "model_case_floor",
           "PRECISION_PEAK", "peak_rate"]

#: Which GEMM peak a row's precision runs at (int8 activations and weights -> the int8 peak).
PRECISION_PEAK = {"fp32": "fp32_macs_per_s", "float32": "fp32_macs_per_s", "int8": "int8_macs_per_s",
                  "fp16": "fp16_macs_per_s", "float16": "fp16_macs_per_s", "bf16": "fp16_macs_per_s",
                  "bfloat16": "fp16_macs_per_s"}


def peak_rate(peaks: dict[str, Any], precision: str) -> float | None:
    """The MAC rate a row of ``precision`` can reach here: its own GEMM peak, or the float32 one
    where that is higher - narrow products (int8, fp16) are exact in a float32 GEMM, so a floor
    must not assume less (on an AVX2-only CPU ``torch._int_mm`` is a generic loop far below
    ``torch.mm``). None when neither peak was measured."""
    rates = [peaks.get(PRECISION_PEAK.get(precision, "fp32_macs_per_s")), peaks.get("fp32_macs_per_s")]
    numbers = [float(r) for r in rates if isinstance(r, (int, float))]
    return max(numbers) if numbers else None


def _best(fn: Callable[[], Any], device: torch.device, repeats: int) -> float:
    """Shortest of ``repeats`` single calls after one warm-up (a peak, so the minimum), timed by
    the suite's one harness (:func:`bench.timing.harness.time_callable`; bench/README.md)."""
    from bench.timing.harness import time_callable

    timing = time_callable(fn, device, warmup=1, min_samples=repeats, max_samples=repeats, budget_s=0.0,
                           min_sample_s=0.0)
    return max(min(timing.samples), 1e-9)


def measure_peaks(device: str | torch.device = "cpu", repeats: int = 5) -> dict[str, Any]:
    """This machine's memory bandwidth and GEMM peaks (see the module docstring); a peak that
    cannot be measured is recorded as ``"unavailable: <reason>"``."""
    from bench.timing.probes import _field

    device = torch.device(device)
    cuda = device.type == "cuda"
    n_copy = (1 << 28 if cuda else 1 << 26)  # float32 elements: 1 GiB / 256 MiB
    n_mm = 8192 if cuda else 2048

    def bandwidth() -> float:
        src = torch.ones(n_copy, device=device)
        dst = torch.empty_like(src)
        return 2 * src.numel() * 4 / _best(lambda: dst.copy_(src), device, repeats)

    def gemm(dtype: torch.dtype) -> float:
        a = torch.randn(n_mm, n_mm, device=device).to(dtype)
        b = torch.randn(n_mm, n_mm, device=device).to(dtype)
        return n_mm ** 3 / _best(lambda: torch.mm(a, b), device, repeats)

    def int8() -> float:
        def rate(n: int, reps: int) -> float:
            a = torch.randint(-128, 128, (n, n), dtype=torch.int8, device=device)
            b = torch.randint(-128, 128, (n, n), dtype=torch.int8, device=device)
            return n ** 3 / _best(lambda: torch._int_mm(a, b), device, reps)

        # A CPU without int8 dot products runs torch._int_mm as a generic loop (~0.3 GMAC/s on
        # AVX2): the full-size product would take minutes and say nothing more than a small one.
        small = rate(n_mm // 4, 1)
        torch_rate = small if n_mm ** 3 / small > 2.0 else rate(n_mm, repeats)
        ort_rate = _ort_int8_gemm_rate(n_mm, repeats) if not cuda else None
        return max(torch_rate, ort_rate or 0.0)

    out: dict[str, Any] = {
        "method": f"best of {repeats}: copy of {n_copy * 4 >> 20} MiB float32 (bytes read + written); "
                  f"{n_mm}^3 torch.mm float32; {n_mm}^3 int8: the better of torch._int_mm and, on the CPU, "
                  f"onnxruntime MatMulInteger (where installed)",
        "threads": torch.get_num_threads(),
        "bandwidth_Bps": _field(bandwidth),
        "fp32_macs_per_s": _field(lambda: gemm(torch.float32)),
        "int8_macs_per_s": _field(int8),
    }
    if cuda:
        out["fp16_macs_per_s"] = _field(lambda: gemm(torch.float16))
    return out


def _ort_int8_gemm_rate(n: int, repeats: int) -> float | None:
    """MACs per second of ONNX Runtime's ``MatMulInteger`` on ``(n, n) uint8 @ (n, n) int8``
    (the weight a constant, as in a quantized conv) with the suite's ORT thread settings; None
    where onnx or onnxruntime is not installed or the probe fails (the int8 peak then rests on
    ``torch._int_mm`` alone, as before)."""
    try:
        import numpy as np
        import onnx
        import onnxruntime  # noqa: F401
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:
        return None
    import tempfile
    from pathlib import Path

    from bench.timing.runtimes import _ort_session

    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.integers(-128, 128, (n, n), dtype=np.int8), "b")
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "b"], ["y"])], "int8_gemm_peak",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [n, n])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [n, n])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    a = rng.integers(0, 256, (n, n), dtype=np.uint8)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "int8_gemm.onnx"
            onnx.save(model, str(path))
            session = _ort_session(path, ["CPUExecutionProvider"])
        return n ** 3 / _best(lambda: session.run(None, {"a": a}), torch.device("cpu"), repeats)
    except Exception:  # noqa: BLE001 - a failed extra probe must not cost the int8 peak
        return None


def roofline_s(bytes_moved: float, macs: float, bandwidth_Bps: float, macs_per_s: float) -> float:
    """``max(bytes / bandwidth, macs / peak)``: the row's floor in seconds."""
    if bandwidth_Bps <= 0 or macs_per_s <= 0:
        raise ValueError(f"peaks must be positive, got bandwidth {bandwidth_Bps}, MAC rate {macs_per_s}")
    return max(bytes_moved / bandwidth_Bps, macs / macs_per_s)


def conv_floor(n: int, c_in: int, c_out: int, h: int, w: int, macs: int, weight_bytes: float, precision: str,
               peaks: dict[str, Any], act_bytes: int = 4) -> dict[str, Any] | None:
    """Floor of one 1x1 conv that reads x ``(n, c_in, h, w)`` once, writes y ``(n, c_out, h, w)``
    once, loads its weights once and runs ``macs`` MACs at ``precision``'s peak. None when a
    needed peak is missing (``"unavailable: ..."``)."""
    bw = peaks.get("bandwidth_Bps")
    rate = peak_rate(peaks, precision)
    if not isinstance(bw, (int, float)) or rate is None:
        return None
    moved = act_bytes * n * h * w * (c_in + c_out) + weight_bytes
    return {"floor_s": roofline_s(moved, macs, bw, rate), "floor_bytes": moved, "floor_macs": macs,
            "floor_precision": precision}


def layer_floor(row: dict[str, Any], peaks: dict[str, Any]) -> dict[str, Any] | None:
    """Floor of a layer row (see the module docstring); forward rows only (None for fwdbwd)."""
    from wcc.haar import padded_size

    if row["direction"] != "fwd":
        return None
    s = row["shape"]
    n, c_in, c_out, h, w = s["batch"], s["c_in"], s["c_out"], s["height"], s["width"]
    dense_macs = n * c_in * c_out * h * w
    elt = {"float32": 4, "float16": 2, "bfloat16": 2}[row["dtype"]]
    if row["op"] == "wcc":
        levels = row["levels"]
        kept = max(1, int(padded_size(h, levels) * padded_size(w, levels) * row["keep_ratio"]))
        return conv_floor(n, c_in, c_out, h, w, n * c_out * c_in * kept, c_out * c_in, "int8", peaks, elt)
    precision = row.get("precision") or row["dtype"]
    if row["op"] == "quantconv":
        precision = "int8"
    wbytes = c_out * c_in * (1 if precision == "int8" else elt)
    return conv_floor(n, c_in, c_out, h, w, dense_macs, wbytes, precision, peaks, elt)


def model_floor_s(model: torch.nn.Module, input_shape: tuple[int, ...], precision: str,
                  peaks: dict[str, Any]) -> dict[str, Any] | None:
    """Sum of the conv floors of ``model`` at ``input_shape``. ``precision`` is the dense
    layers' precision (``"int8"`` for a fully quantized runtime); QuantConv2d and WCC layers run
    at the int8 peak with int8 weights, WCC counting only the kept-column GEMM."""
    from wcc.accounting import layer_costs

    total = 0.0
    moved = 0.0
    macs = 0
    for c in layer_costs(model, input_shape):
        n, c_in, h, w = c.in_shape
        _, c_out, ho, wo = c.out_shape
        layer_precision = "int8" if c.kind in ("wcc", "quant") else precision
        params = c.dense_macs // max(1, n * ho * wo)  # weights of the conv = MACs per output pixel
        wbytes = params * (1 if layer_precision == "int8" else 4)
        bw, rate = peaks.get("bandwidth_Bps"), peak_rate(peaks, layer_precision)
        if not isinstance(bw, (int, float)) or rate is None:
            return None
        layer_moved = 4 * n * (c_in * h * w + c_out * ho * wo) + wbytes
        total += roofline_s(layer_moved, c.macs, bw, rate)
        moved += layer_moved
        macs += c.macs
    return {"floor_s": total, "floor_bytes": moved, "floor_macs": macs, "floor_precision": precision}


def safe_floor(fn: Callable[..., dict[str, Any] | None], *args: Any) -> dict[str, Any] | None:
    """``fn(*args)``, or None when it raises (a missing floor must not end a timing run)."""
    try:
        return fn(*args)
    except Exception as exc:  # noqa: BLE001
        import sys

        print(f"bench timing: no floor for a row ({type(exc).__name__}: {exc})", file=sys.stderr)
        return None


def add_floors(rows: list[dict[str, Any]], floors: list[dict[str, Any] | None]) -> None:
    """Set ``floor_s`` (and its bytes, MACs, precision) and ``floor_ratio`` = median / floor on
    every row, in place (None where there is no floor or no median)."""
    for row, fl in zip(rows, floors):
        fl = fl or {"floor_s": None, "floor_bytes": None, "floor_macs": None, "floor_precision": None}
        row.update(fl)
        med = row.get("median_s")
        row["floor_ratio"] = med / fl["floor_s"] if med is not None and fl["floor_s"] else None


def model_case_floor(case: Any, peaks: dict[str, Any]) -> dict[str, Any] | None:
    """Floor of a :class:`bench.timing.model.ModelCase` row: its converted model's conv floors
    (dense layers at the runtime's precision, e.g. all int8 for ONNX Runtime int8)."""
    import dataclasses

    from bench.timing.model import build_model
    from bench.timing.runtimes import precision_of

    precision = precision_of(case.runtime, case.dtype) if case.runtime is not None else case.dtype
    if case.backend is not None:
        # The costs do not depend on the backend, and the shapes come from a meta-device
        # forward that only the reference backend runs.
        case = dataclasses.replace(case, backend="reference")
    model = build_model(case, "cpu")
    return model_floor_s(model, (case.batch, 3, case.height, case.width), precision, peaks)
