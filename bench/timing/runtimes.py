"""Deployed dense baselines: the runtimes users ship a dense model with, timed next to WCC.

Eager PyTorch is the weakest dense baseline there is; a user deploying on a CPU exports to ONNX
Runtime (often int8), compiles with ``torch.compile`` or uses OpenVINO, and on NVIDIA uses
TensorRT. Each baseline here turns a dense ``nn.Module`` (a 1x1 conv of a layer row, or the whole
dense model of a model row) and an example input into a zero-argument callable, so the layer and
model runners time it exactly as they time WCC (:func:`bench.timing.harness.time_callable`).

==================  =========  =========  =====================================================
op                  device     precision  what runs
==================  =========  =========  =====================================================
``ort_fp32``        cpu        fp32       ONNX export (TorchScript exporter, opset 17), ONNX
                                          Runtime CPU EP, all graph optimisations
``ort_int8``        cpu        int8       the same export, static QDQ quantization: int8
                                          per-channel (symmetric) weights, uint8 activations
                                          calibrated (MinMax) on :data:`CALIBRATION_BATCHES`
                                          seeded inputs of the row's shape
``inductor_fp32``   cpu, cuda  fp32/dtype ``torch.compile`` (inductor) with freezing, no_grad,
                                          channels-last weights and input
``openvino_fp32``   cpu        fp32       OpenVINO on the FP32 ONNX export (when installed)
``openvino_int8``   cpu        int8       OpenVINO on the QDQ int8 export (when installed)
``tensorrt_fp16``   cuda       fp16       TensorRT: ONNX Runtime's TensorRT EP on the ONNX
                                          export, else torch-tensorrt
``tensorrt_int8``   cuda       int8       TensorRT EP on a QDQ export with symmetric int8
                                          activations (explicit quantization)
==================  =========  =========  =====================================================

cuDNN FP32/FP16 on CUDA are the eager dense ops already timed (``dense_nchw`` / ``dense_cl`` at
the run's dtype). A baseline that cannot run raises :class:`RuntimeUnavailableError` with the
reason (not installed, wrong device, export failed), which the runners record in the row's
``error``; the run goes on. The ONNX files are written to a temporary directory and use the
project's own modules and shapes only; nothing is downloaded.

Accuracy: every runtime row records ``max_rel_err`` = ``max|y - y_eager| / max|y_eager|``
against eager PyTorch FP32 on the timed input. FP32 runtimes stay within :data:`FP32_TOL`
(tested); int8 within :data:`INT8_LAYER_TOL` per layer (one quantized conv, 8-bit activations)
and :data:`INT8_MODEL_TOL` for a whole model.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from bench.rows import RUNTIME_OPS

__all__ = ["RuntimeSpec", "RUNTIMES", "RUNTIME_OPS", "RuntimeUnavailableError", "runtime_ops", "runtime_version",
           "build_runtime", "calibration_inputs", "export_onnx", "quantize_qdq", "max_rel_err",
           "CALIBRATION_BATCHES", "FP32_TOL", "INT8_LAYER_TOL", "INT8_MODEL_TOL"]

CALIBRATION_BATCHES = 4
FP32_TOL = 1e-4
INT8_LAYER_TOL = 0.05
#: A whole model at int8 (8-bit activations at every conv; the errors compound). Measured on
#: DeepLabV3+-MobileNetV2 with seeded weights: 0.018 at 64x64, 0.031 at 128x256.
INT8_MODEL_TOL = 0.1


class RuntimeUnavailableError(RuntimeError):
    """A deployed baseline cannot run here; the message says why and what would enable it."""


@dataclass(frozen=True)
class RuntimeSpec:
    """One deployed dense baseline. ``precision`` None means the run's dtype."""

    op: str
    label: str
    runtime: str  # the package whose version is recorded
    devices: tuple[str, ...]
    precision: str | None


RUNTIMES: tuple[RuntimeSpec, ...] = (
    RuntimeSpec("ort_fp32", "ONNX Runtime FP32", "onnxruntime", ("cpu",), "fp32"),
    RuntimeSpec("ort_int8", "ONNX Runtime int8", "onnxruntime", ("cpu",), "int8"),
    RuntimeSpec("inductor_fp32", "torch.compile", "torch", ("cpu", "cuda"), None),
    RuntimeSpec("openvino_fp32", "OpenVINO FP32", "openvino", ("cpu",), "fp32"),
    RuntimeSpec("openvino_int8", "OpenVINO int8", "openvino", ("cpu",), "int8"),
    RuntimeSpec("tensorrt_fp16", "TensorRT FP16", "tensorrt", ("cuda",), "fp16"),
    RuntimeSpec("tensorrt_int8", "TensorRT int8", "tensorrt", ("cuda",), "int8"),
)
if tuple(s.op for s in RUNTIMES) != RUNTIME_OPS:  # the names are declared once, in bench.rows (the schema)
    raise ImportError(f"bench.rows.RUNTIME_OPS {RUNTIME_OPS} and the runtime specs here disagree")
_SPECS = {s.op: s for s in RUNTIMES}
_PRECISION = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}


def spec(op: str) -> RuntimeSpec:
    try:
        return _SPECS[op]
    except KeyError:
        raise ValueError(f"unknown runtime op {op!r}; known: {', '.join(RUNTIME_OPS)}") from None


def runtime_ops(device: str) -> tuple[str, ...]:
    """The baselines of ``device``: all of them are listed (and those that cannot run record why)."""
    return tuple(s.op for s in RUNTIMES if device in s.devices)


def precision_of(op: str, dtype: str) -> str:
    """The precision a row of ``op`` computes in (``fp32``, ``int8``, ...)."""
    p = spec(op).precision
    return p if p is not None else _PRECISION[dtype]


def runtime_version(op: str) -> str | None:
    """``"<package> <version>"`` of ``op``'s runtime, or None when it is not installed."""
    name = spec(op).runtime
    if name == "tensorrt":
        for pkg in ("tensorrt", "torch-tensorrt", "onnxruntime-gpu"):
            with contextlib.suppress(importlib.metadata.PackageNotFoundError):
                return f"{pkg} {importlib.metadata.version(pkg)}"
        return None
    if name == "torch":
        return f"torch {torch.__version__} (inductor)"
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
        return f"{name} {importlib.metadata.version(name)}"
    return None


def max_rel_err(y: Any, ref: torch.Tensor) -> float:
    """``max|y - ref| / max|ref|`` (both on the CPU in float32)."""
    y = torch.as_tensor(y).detach().float().cpu()
    ref = ref.detach().float().cpu()
    return float((y - ref).abs().max() / ref.abs().max().clamp_min(1e-30))


def calibration_inputs(example: torch.Tensor, batches: int = CALIBRATION_BATCHES, seed: int = 1) -> list[torch.Tensor]:
    """``batches`` seeded standard-normal inputs of ``example``'s shape (the distribution the
    timed inputs come from), on the CPU in float32. Seed 1: not the timed input itself."""
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(example.shape, generator=gen) for _ in range(batches)]


# ------------------------------------------------------------------------------ ONNX and ORT


def export_onnx(module: nn.Module, example: torch.Tensor, path: str | os.PathLike[str]) -> Path:
    """Export ``module`` (eval, CPU, float32) at ``example``'s static shape to ``path`` (input
    ``x``, output ``y``, opset 17, TorchScript exporter: needs no onnxscript)."""
    import warnings

    try:
        import onnx  # noqa: F401 - the exporter needs it
    except ImportError as exc:
        raise RuntimeUnavailableError(f"onnx is not installed ({exc}); pip install 'wcc-bench[runtimes]'") from None
    path = Path(path)
    module = module.eval().float().cpu()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        try:
            torch.onnx.export(module, (example.float().cpu(),), str(path), input_names=["x"], output_names=["y"],
                              opset_version=17, dynamo=False)
        except Exception as exc:  # noqa: BLE001
            raise RuntimeUnavailableError(f"ONNX export failed: {type(exc).__name__}: {exc}") from exc
    return path


def _u8s8_saturates() -> bool:
    """True on x86 without VNNI, where ONNX Runtime's u8 x s8 kernels add pairs of products in
    int16 (AVX2 ``vpmaddubsw``) and saturate: measured here, a QDQ 1x1 conv came out 40% off.
    ORT's quantization guide prescribes ``reduce_range`` (7-bit weights) on such CPUs."""
    from wcc.cpu_features import int8_dot_product_isa, is_x86

    return is_x86() and int8_dot_product_isa() is None


def quantize_qdq(fp32_path: Path, out_path: Path, calib: list[torch.Tensor],
                 symmetric_activations: bool = False) -> Path:
    """Static QDQ quantization of ``fp32_path``: per-channel int8 weights, 8-bit activations
    calibrated (MinMax) on ``calib``. ``symmetric_activations``: int8 activations (TensorRT's
    explicit quantization needs them) instead of uint8 (the fast path of ORT's x86 kernels).
    Weights use 7 bits on x86 CPUs without VNNI (:func:`_u8s8_saturates`)."""
    import logging

    try:
        from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    except ImportError as exc:
        raise RuntimeUnavailableError(f"onnxruntime is not installed ({exc}); "
                                      "pip install 'wcc-bench[runtimes]'") from None

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter([{"x": t.float().cpu().numpy()} for t in calib])

        def get_next(self) -> dict[str, Any] | None:
            return next(self._it, None)

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # ORT suggests a pre-processing step on every call
    try:
        quantize_static(str(fp32_path), str(out_path), _Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QInt8 if symmetric_activations else QuantType.QUInt8,
                        weight_type=QuantType.QInt8, reduce_range=_u8s8_saturates(),
                        extra_options={"ActivationSymmetric": symmetric_activations})
    except Exception as exc:  # noqa: BLE001
        raise RuntimeUnavailableError(f"QDQ quantization failed: {type(exc).__name__}: {exc}") from exc
    finally:
        root.setLevel(level)
    return out_path


def _ort_session(path: Path, providers: list[Any]) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # The same thread count as the eager rows, so the comparison is per machine, not per pool.
    opts.intra_op_num_threads = torch.get_num_threads()
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3  # errors only: the optimiser reports every folded constant
    return ort.InferenceSession(str(path), opts, providers=providers)


def _ort_callable(session: Any, example: torch.Tensor) -> Callable[[], Any]:
    x = example.detach().float().cpu().numpy()
    return lambda: session.run(None, {"x": x})[0]


# ---------------------------------------------------------------------------------- builders


@dataclass
class Built:
    """A ready baseline: ``fn()`` runs it once on the example input; ``output`` is its output
    on that input (for the accuracy check); ``setup_s`` the export/compile/calibration time."""

    fn: Callable[[], Any]
    output: torch.Tensor
    setup_s: float


def _need_device(op: str, device: torch.device) -> None:
    s = spec(op)
    if device.type not in s.devices:
        where = " or ".join(s.devices)
        raise RuntimeUnavailableError(f"{s.label} runs on {where} only; this run is on {device.type}")


def _need(module_name: str, op: str, hint: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - ImportError or a broken install
        raise RuntimeUnavailableError(f"{spec(op).label}: {module_name} is not installed "
                                      f"({type(exc).__name__}); {hint}") from None


def build_runtime(op: str, module: nn.Module, example: torch.Tensor, device: str | torch.device = "cpu",
                  calib: list[torch.Tensor] | None = None) -> Built:
    """Prepare baseline ``op`` for the dense ``module`` at ``example``'s shape on ``device``.

    ``module`` must be in eval mode on ``device`` in the run's dtype; ONNX-based runtimes export
    a float32 CPU copy. Raises :class:`RuntimeUnavailableError` when the baseline cannot run.
    """
    import copy
    import time

    device = torch.device(device)
    _need_device(op, device)
    t0 = time.perf_counter()
    if op == "inductor_fp32":
        fn = _inductor(module, example)
    else:
        cpu_module = copy.deepcopy(module).float().cpu().eval()
        with tempfile.TemporaryDirectory(prefix="wcc-onnx-") as tmp:
            fp32 = export_onnx(cpu_module, example, Path(tmp) / "fp32.onnx")
            fn = _from_onnx(op, fp32, Path(tmp), example, calib or calibration_inputs(example), cpu_module)
    out = fn()
    setup = time.perf_counter() - t0
    return Built(fn, torch.as_tensor(out).detach(), setup)


def _inductor(module: nn.Module, example: torch.Tensor) -> Callable[[], Any]:
    import copy

    import torch._inductor.config as inductor_config

    compiled: Any = None
    if example.dim() == 4:
        # Channels-last weights and input, as one deploys a CNN on a CPU: inductor runs its
        # convolutions channels-last anyway, and a graph that starts channels-last needs no
        # transposes around the ops that keep their input's layout (the WCC op, wcc/ops.py).
        # A copy: the caller's module stays as it was.
        module = copy.deepcopy(module).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        example = example.contiguous(memory_format=torch.channels_last)

    def run() -> Any:
        with torch.no_grad():
            return compiled(example)

    # Freezing folds the weights into constants (and lets inductor pre-pack them), the
    # inference setting; it applies when the graph is compiled, i.e. at the first call.
    try:
        compiled = torch.compile(module, backend="inductor")
        with inductor_config.patch(freezing=True):
            run()
    except Exception as exc:  # noqa: BLE001 - no compiler, unsupported op, ...
        raise RuntimeUnavailableError(f"torch.compile failed: {type(exc).__name__}: {str(exc)[:300]}") from exc
    return run


def _from_onnx(op: str, fp32: Path, tmp: Path, example: torch.Tensor, calib: list[torch.Tensor],
               module: nn.Module) -> Callable[[], Any]:
    if op in ("ort_fp32", "ort_int8"):
        _need("onnxruntime", op, "pip install 'wcc-bench[runtimes]'")
        path = fp32 if op == "ort_fp32" else quantize_qdq(fp32, tmp / "int8.onnx", calib)
        return _ort_callable(_ort_session(path, ["CPUExecutionProvider"]), example)
    if op in ("openvino_fp32", "openvino_int8"):
        ov = _need("openvino", op, "pip install openvino (optional)")
        # OpenVINO reads the QDQ model as FakeQuantize nodes and runs them as int8 kernels.
        path = fp32 if op == "openvino_fp32" else quantize_qdq(fp32, tmp / "int8.onnx", calib)
        compiled = ov.Core().compile_model(str(path), "CPU",
                                           {"INFERENCE_NUM_THREADS": torch.get_num_threads(),
                                            "INFERENCE_PRECISION_HINT": "f32"})
        x = example.detach().float().cpu().numpy()
        request = compiled.create_infer_request()
        return lambda: request.infer({0: x})[0]
    if op in ("tensorrt_fp16", "tensorrt_int8"):
        return _tensorrt(op, fp32, tmp, example, calib, module)
    raise ValueError(f"unknown runtime op {op!r}")


def _tensorrt(op: str, fp32: Path, tmp: Path, example: torch.Tensor, calib: list[torch.Tensor],
              module: nn.Module) -> Callable[[], Any]:
    """TensorRT through ONNX Runtime's TensorRT EP (fp16, and int8 from a symmetric QDQ model),
    else torch-tensorrt for fp16 (output left on the GPU, as the eager cuDNN rows leave theirs).

    Caveat: through the EP, each call includes ORT's host-to-device copy of the input and the
    device-to-host copy of the output (``InferenceSession.run``; IO binding is not wired), which
    penalises TensorRT against the eager rows on small shapes. Neither path has been run on a
    GPU by this suite's author; the CPU tests cover only their skip reasons."""
    try:
        import onnxruntime as ort
        has_ep = "TensorrtExecutionProvider" in ort.get_available_providers()
    except ImportError:
        has_ep = False
    if has_ep:
        path = fp32 if op == "tensorrt_fp16" else quantize_qdq(fp32, tmp / "int8_sym.onnx", calib, True)
        options = {"trt_fp16_enable": True, "trt_int8_enable": op == "tensorrt_int8",
                   "trt_engine_cache_enable": False}
        return _ort_callable(_ort_session(path, [("TensorrtExecutionProvider", options)]), example)
    if op == "tensorrt_int8":
        raise RuntimeUnavailableError("TensorRT int8 needs ONNX Runtime's TensorRT execution provider "
                                      "(onnxruntime-gpu built with TensorRT); not available here")
    trt = _need("torch_tensorrt", op, "install torch-tensorrt or onnxruntime-gpu with the TensorRT EP")
    x = example.detach().to("cuda", torch.float16)
    try:
        engine = trt.compile(module.to("cuda", torch.float16).eval(), ir="dynamo", inputs=[x],
                             enabled_precisions={torch.float16})
    except Exception as exc:  # noqa: BLE001
        raise RuntimeUnavailableError(f"torch-tensorrt compile failed: {type(exc).__name__}: {exc}") from exc

    def run() -> Any:
        with torch.no_grad():
            return engine(x)
    return run
