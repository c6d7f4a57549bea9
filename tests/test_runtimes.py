"""Deployed dense baselines (bench.timing.runtimes) and the measured floor (bench.timing.floor).

Accuracy against eager PyTorch only; no timing is asserted (times vary with the machine)."""

from __future__ import annotations

import builtins
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from bench.timing import runtimes as rt
from bench.timing.floor import add_floors, conv_floor, layer_floor, model_floor_s, roofline_s
from bench.timing.layer import LayerGrid, add_ratios, run_layer_benchmarks
from bench.timing.model import ModelCase, _add_model_ratios, build_model
from bench.timing.shapes import ConvShape

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

_FAST = {"warmup": 1, "min_samples": 2, "max_samples": 2, "budget_s": 0.0}


def _conv(c_in: int = 16, c_out: int = 24) -> tuple[nn.Conv2d, torch.Tensor]:
    torch.manual_seed(0)
    return nn.Conv2d(c_in, c_out, 1).eval(), torch.randn(1, c_in, 12, 20)


# ------------------------------------------------------------------------------------- export


def test_export_is_a_valid_static_onnx_graph(tmp_path: Path) -> None:
    conv, x = _conv()
    path = rt.export_onnx(conv, x, tmp_path / "c.onnx")
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    (inp,), (out,) = model.graph.input, model.graph.output
    assert (inp.name, out.name) == ("x", "y")
    assert [d.dim_value for d in inp.type.tensor_type.shape.dim] == [1, 16, 12, 20]
    assert [n.op_type for n in model.graph.node] == ["Conv"]


# --------------------------------------------------------------------------------- calibration


def test_calibration_inputs_are_seeded_and_not_the_timed_input() -> None:
    x = torch.randn(1, 4, 6, 6, generator=torch.Generator().manual_seed(0))
    a, b = rt.calibration_inputs(x), rt.calibration_inputs(x)
    assert len(a) == rt.CALIBRATION_BATCHES and all(t.shape == x.shape for t in a)
    assert all(torch.equal(s, t) for s, t in zip(a, b))
    assert not any(torch.equal(t, x) for t in a)


def test_qdq_calibration_sets_minmax_activation_scale_and_per_channel_weights(tmp_path: Path) -> None:
    conv, x = _conv(8, 5)
    fp32 = rt.export_onnx(conv, x, tmp_path / "c.onnx")
    # Two calibration batches whose joint range is exactly [-2, 6]: MinMax gives a uint8 scale
    # of (6 - (-2)) / 255 and a zero point of round(2 / scale) = 64 for the input x.
    lo, hi = torch.zeros_like(x), torch.zeros_like(x)
    lo.view(-1)[0], hi.view(-1)[1] = -2.0, 6.0
    q = onnx.load(str(rt.quantize_qdq(fp32, tmp_path / "q.onnx", [lo, hi])))
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= {n.op_type for n in q.graph.node}
    init = {i.name: onnx.numpy_helper.to_array(i) for i in q.graph.initializer}
    quant_x = next(n for n in q.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "x")
    scale, zero = init[quant_x.input[1]], init[quant_x.input[2]]
    assert float(scale) == pytest.approx(8 / 255, rel=1e-6)
    assert int(zero) == 64 and zero.dtype.name == "uint8"
    weight_dq = [n for n in q.graph.node if n.op_type == "DequantizeLinear" and init.get(n.input[0]) is not None
                 and init[n.input[0]].dtype.name == "int8" and init[n.input[0]].ndim == 4]
    assert len(weight_dq) == 1 and init[weight_dq[0].input[1]].shape == (5,)  # one scale per output channel


# -------------------------------------------------------------------------- accuracy vs eager


def test_ort_fp32_and_int8_layer_match_eager() -> None:
    conv, x = _conv()
    ref = conv(x).detach()
    fp32 = rt.build_runtime("ort_fp32", conv, x)
    assert rt.max_rel_err(fp32.fn(), ref) < rt.FP32_TOL
    int8 = rt.build_runtime("ort_int8", conv, x)
    err = rt.max_rel_err(int8.fn(), ref)
    assert 0 < err < rt.INT8_LAYER_TOL  # quantized (not bit-exact), yet close


def test_ort_model_rows_match_eager() -> None:
    case = ModelCase("deeplabv3plus-mobilenetv2", "dense", 1, 64, 64)
    model = build_model(case)
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = model(x)
    assert rt.max_rel_err(rt.build_runtime("ort_fp32", model, x).output, ref) < rt.FP32_TOL
    assert rt.max_rel_err(rt.build_runtime("ort_int8", model, x).output, ref) < rt.INT8_MODEL_TOL


def test_layer_rows_carry_runtime_precision_error_and_best_runtime_ratio() -> None:
    grid = LayerGrid(shape_sets=("micro",), keep_ratios=(0.5,), levels=(1,), directions=("fwd", "fwdbwd"),
                     runtimes=("ort_fp32", "ort_int8", "tensorrt_fp16"), shapes={"micro": (ConvShape(1, 8, 8, 8, 8),)})
    rows = run_layer_benchmarks(grid.cases(["reference"]), "cpu", _FAST, progress=False)
    by_op = {(r["op"], r["direction"]): r for r in rows}
    assert ("ort_fp32", "fwdbwd") not in by_op  # runtimes are inference only
    ort32, ort8 = by_op["ort_fp32", "fwd"], by_op["ort_int8", "fwd"]
    assert ort32["runtime"].startswith("onnxruntime ") and ort32["precision"] == "fp32"
    assert ort8["precision"] == "int8" and ort32["max_rel_err"] < rt.FP32_TOL < ort8["max_rel_err"]
    trt = by_op["tensorrt_fp16", "fwd"]  # skipped with its reason, and the run went on
    assert trt["median_s"] is None and "runs on cuda only" in trt["error"]
    fwd = [r for r in rows if r["direction"] == "fwd" and r["median_s"] is not None]
    best = min(fwd, key=lambda r: r["median_s"] if r["op"] not in ("wcc", "quantconv") else math.inf)
    assert all(r["best_runtime_op"] == best["op"] for r in fwd)
    wcc = by_op["wcc", "fwd"]
    assert wcc["ratio_to_best_runtime"] == pytest.approx(wcc["median_s"] / best["median_s"])


# ------------------------------------------------------------------------------- skip reasons


def test_missing_openvino_is_a_recorded_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_openvino(name: str, *args: object, **kwargs: object) -> object:
        if name == "openvino" or name.startswith("openvino."):
            raise ImportError("No module named 'openvino'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_openvino)
    conv, x = _conv()
    with pytest.raises(rt.RuntimeUnavailableError, match="openvino is not installed.*pip install openvino"):
        rt.build_runtime("openvino_int8", conv, x)


@pytest.mark.parametrize("op", ["tensorrt_fp16", "tensorrt_int8"])
def test_cuda_only_baselines_refuse_the_cpu(op: str) -> None:
    conv, x = _conv()
    with pytest.raises(rt.RuntimeUnavailableError, match=r"runs on cuda only; this run is on cpu"):
        rt.build_runtime(op, conv, x, "cpu")


def test_cpu_only_baselines_refuse_cuda() -> None:
    conv, x = _conv()
    with pytest.raises(rt.RuntimeUnavailableError, match=r"ONNX Runtime int8 runs on cpu only"):
        rt.build_runtime("ort_int8", conv, x, "cuda")


def test_inductor_baseline_compiles_a_channels_last_copy(monkeypatch: pytest.MonkeyPatch) -> None:
    """The compiled baseline gets channels-last weights and input; the caller's module is untouched."""
    seen = []

    def fake_compile(module: nn.Module, **kwargs: object) -> object:
        seen.append(module)
        return lambda x: (seen.append(x), module(x))[1]

    monkeypatch.setattr(torch, "compile", fake_compile)
    conv, x = _conv()
    built = rt.build_runtime("inductor_fp32", conv, x)
    compiled_module, example = seen[0], seen[1]
    assert compiled_module is not conv and conv.weight.is_contiguous()
    assert compiled_module.weight.is_contiguous(memory_format=torch.channels_last)
    assert example.is_contiguous(memory_format=torch.channels_last) and not example.is_contiguous()
    torch.testing.assert_close(built.output, conv(x))


def test_compile_failure_is_a_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> object:
        raise RuntimeError("no C++ compiler")

    monkeypatch.setattr(torch, "compile", broken)
    conv, x = _conv()
    with pytest.raises(rt.RuntimeUnavailableError, match="torch.compile failed: RuntimeError: no C\\+\\+ compiler"):
        rt.build_runtime("inductor_fp32", conv, x)


def test_tensorrt_without_any_trt_install_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_trt(name: str, *args: object, **kwargs: object) -> object:
        if name.startswith("torch_tensorrt"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_trt)
    monkeypatch.setattr(rt, "_need_device", lambda op, device: None)  # pretend this is a CUDA run
    conv, x = _conv()
    with pytest.raises(rt.RuntimeUnavailableError, match="torch_tensorrt is not installed"):
        rt.build_runtime("tensorrt_fp16", conv, x, "cpu")
    with pytest.raises(rt.RuntimeUnavailableError, match="TensorRT int8 needs ONNX Runtime's TensorRT"):
        rt.build_runtime("tensorrt_int8", conv, x, "cpu")


def test_unknown_runtime_and_bad_model_case() -> None:
    with pytest.raises(ValueError, match="unknown runtime op"):
        rt.runtime_ops("cpu") and rt.spec("tvm")
    with pytest.raises(ValueError, match="only with variant 'dense'"):
        ModelCase("deeplabv3plus-mobilenetv2", "WCC 25%", 1, 32, 32, backend="reference", runtime="ort_fp32")
    assert ModelCase("deeplabv3plus-mobilenetv2", "dense", 1, 32, 32, runtime="ort_int8").label == "ONNX Runtime int8"


# -------------------------------------------------------------------------------- ratios


def test_model_ratios_take_the_fastest_dense_row_any_runtime() -> None:
    base = {"model": "m", "input": [1, 3, 8, 8], "dtype": "float32"}
    rows = [dict(base, variant="FP32", keep_ratio=None, runtime_op=None, median_s=4.0),
            dict(base, variant="ONNX Runtime FP32", keep_ratio=None, runtime_op="ort_fp32", median_s=2.0),
            dict(base, variant="ONNX Runtime int8", keep_ratio=None, runtime_op="ort_int8", median_s=1.0),
            dict(base, variant="8/8", keep_ratio=None, runtime_op=None, median_s=0.5),  # not a dense baseline
            dict(base, variant="WCC 25%", keep_ratio=0.25, runtime_op=None, median_s=3.0)]
    _add_model_ratios(rows)
    assert [r["ratio_to_dense"] for r in rows] == [1.0, 0.5, 0.25, 0.125, 0.75]
    assert [r["ratio_to_best_runtime"] for r in rows] == [4.0, 2.0, 1.0, 0.5, 3.0]
    assert rows[-1]["best_runtime"] == "ONNX Runtime int8"


def test_add_ratios_includes_runtimes_but_eager_ratio_stays() -> None:
    base = {"shape_set": "s", "shape_label": "1x1x1@1x1", "direction": "fwd", "dtype": "float32"}
    rows = [dict(base, op="dense_nchw", median_s=4.0), dict(base, op="ort_int8", median_s=1.0),
            dict(base, op="wcc", median_s=2.0), dict(base, op="ort_fp32", median_s=None)]
    add_ratios(rows)
    assert rows[2]["ratio_to_dense"] == 0.5 and rows[2]["ratio_to_best_runtime"] == 2.0
    assert rows[2]["best_runtime_op"] == "ort_int8" and rows[1]["dense_op"] == "dense_nchw"


# ---------------------------------------------------------------------------------- floor


_PEAKS = {"bandwidth_Bps": 1e9, "fp32_macs_per_s": 1e9, "int8_macs_per_s": 4e9}


def test_roofline_is_the_slower_of_memory_and_compute() -> None:
    assert roofline_s(2e9, 1e9, 1e9, 4e9) == 2.0
    assert roofline_s(1e9, 8e9, 1e9, 4e9) == 2.0
    with pytest.raises(ValueError):
        roofline_s(1, 1, 0, 1)


def test_floor_formula_on_a_hand_computed_case() -> None:
    # 1x1 conv, N=1, C_in=64, C_out=32, 16x16, float32.
    shape = {"batch": 1, "c_in": 64, "c_out": 32, "height": 16, "width": 16}
    row = {"shape": shape, "direction": "fwd", "dtype": "float32", "op": "dense_nchw", "precision": "fp32"}
    # bytes: 4 * 256 * (64 + 32) = 98304 activations + 4 * 32 * 64 = 8192 weights = 106496;
    # MACs: 256 * 64 * 32 = 524288. At 1 GB/s and 1 GMAC/s: max(106.496 us, 524.288 us).
    fl = layer_floor(row, _PEAKS)
    assert fl["floor_bytes"] == 106496 and fl["floor_macs"] == 524288
    assert fl["floor_s"] == pytest.approx(524.288e-6)
    # ONNX Runtime int8: weights 1 byte, MACs at 4 GMAC/s: max(100.352 us, 131.072 us).
    fl8 = layer_floor(dict(row, op="ort_int8", precision="int8"), _PEAKS)
    assert fl8["floor_bytes"] == 98304 + 2048 and fl8["floor_s"] == pytest.approx(131.072e-6)
    # WCC keep 0.25, J=2: 16x16 is already a multiple of 4, kept columns int(256 * 0.25) = 64;
    # MACs 32 * 64 * 64 = 131072 at int8: 32.768 us < bytes (98304 + 2048) / 1e9 = 100.352 us.
    flw = layer_floor(dict(row, op="wcc", keep_ratio=0.25, levels=2, precision="int8"), _PEAKS)
    assert flw["floor_macs"] == 131072 and flw["floor_s"] == pytest.approx(100.352e-6)
    assert layer_floor(dict(row, direction="fwdbwd"), _PEAKS) is None
    assert conv_floor(1, 1, 1, 1, 1, 1, 1, "fp32", {"bandwidth_Bps": "unavailable: x"}) is None

    # An int8 GEMM slower than the float32 one (AVX2 without VNNI: torch._int_mm is a generic
    # loop): int8 products are exact in float32, so the floor takes the faster float32 rate.
    slow_int8 = dict(_PEAKS, int8_macs_per_s=0.25e9)
    assert layer_floor(dict(row, op="ort_int8", precision="int8"), slow_int8)["floor_s"] == pytest.approx(524.288e-6)

    rows = [{"median_s": 2 * 524.288e-6}, {"median_s": None}]
    add_floors(rows, [fl, None])
    assert rows[0]["floor_ratio"] == pytest.approx(2.0) and rows[1]["floor_s"] is None


def test_model_floor_sums_the_conv_floors() -> None:
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 1))
    fl = model_floor_s(model, (1, 3, 4, 4), "fp32", _PEAKS)
    # conv1: bytes 4*(48 + 128) + 4*216 = 1568, MACs 16*27*8 = 3456 -> 3.456 us;
    # conv2: bytes 4*(128 + 64) + 4*32 = 896, MACs 16*8*4 = 512 -> 0.896 us.
    assert fl["floor_macs"] == 3456 + 512 and fl["floor_bytes"] == 1568 + 896
    assert fl["floor_s"] == pytest.approx(3.456e-6 + 0.896e-6)


# --------------------------------------------------------------------------------- report


def _report_frames(wcc_ms: float) -> tuple["pd.DataFrame", "pd.DataFrame"]:  # noqa: F821
    import pandas as pd

    base = {"shape_set": "extra", "direction": "fwd", "dtype": "float32", "error": None, "keep_ratio": None,
            "levels": None, "backend": None}
    layer = []
    for shape in ("1x8x8@8x8", "1x8x16@8x8"):
        for op, ms in (("dense_nchw", 10.0), ("ort_fp32", 6.0), ("ort_int8", 4.0)):
            layer.append(dict(base, shape_label=shape, op=op, median_s=ms / 1e3, floor_s=1e-3))
        layer.append(dict(base, shape_label=shape, op="wcc", median_s=wcc_ms / 1e3, floor_s=5e-4, keep_ratio=0.25,
                          levels=3, backend="cpu"))
    model = pd.DataFrame([
        {"variant": "ONNX Runtime int8", "runtime_op": "ort_int8", "median_s": 0.064, "error": None},
        {"variant": "WCC 25%", "runtime_op": None, "median_s": wcc_ms * 0.064 / 4.0, "error": None}])
    return pd.DataFrame(layer), model


@pytest.mark.parametrize(("wcc_ms", "word"), [(5.0, "slower than"), (3.0, "faster than")])
def test_report_says_plainly_whether_wcc_beats_int8_dense(wcc_ms: float, word: str) -> None:
    pytest.importorskip("pandas")
    from bench.report.sections import deployed_table, int8_verdict

    layer, model = _report_frames(wcc_ms)
    text = int8_verdict(layer, model)
    assert f"WCC 25% is {word} int8 dense on this machine" in text
    assert f"faster on {2 if wcc_ms < 4 else 0} of 2 shapes" in text
    assert ("End to end, WCC 25% is " + word.split()[0]) in text
    html = deployed_table(layer, "t")
    for col in ("WCC / best dense", "ORT int8 ms", "ORT FP32 ms", "WCC floor ms", "dense floor ms"):
        assert col in html
    assert f"{wcc_ms / 4.0:.2f}" in html  # WCC over the fastest dense baseline (ORT int8, 4 ms)


def test_openvino_layer_matches_eager_when_installed() -> None:
    pytest.importorskip("openvino")
    conv, x = _conv()
    ref = conv(x).detach()
    assert rt.max_rel_err(rt.build_runtime("openvino_fp32", conv, x).fn(), ref) < rt.FP32_TOL
    assert 0 < rt.max_rel_err(rt.build_runtime("openvino_int8", conv, x).fn(), ref) < rt.INT8_LAYER_TOL


def test_int8_peak_is_the_best_int8_gemm_on_the_machine(monkeypatch) -> None:
    """The int8 peak takes ONNX Runtime's MatMulInteger too: on AVX2 CPUs torch._int_mm is a
    generic loop, and a floor from it (or from torch.mm) sat above ORT int8's measured time."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from bench.timing import floor

    rate = floor._ort_int8_gemm_rate(256, 1)
    assert rate is not None and rate > 0
    monkeypatch.setattr(floor, "_ort_int8_gemm_rate", lambda n, repeats: 1e18)
    assert floor.measure_peaks("cpu", repeats=1)["int8_macs_per_s"] == 1e18
    monkeypatch.setattr(floor, "_ort_int8_gemm_rate", lambda n, repeats: None)  # not installed
    assert 0 < floor.measure_peaks("cpu", repeats=1)["int8_macs_per_s"] < 1e18
