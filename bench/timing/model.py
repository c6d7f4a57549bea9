"""Model timing: DeepLabV3+-MobileNetV2 end to end, dense vs 8/8 vs WCC 50/25/12.5%.

Each variant is the paper's surgery (:func:`wcc.convert` with :func:`wcc.models.paper_keep_fp`)
of one seeded model: ``dense`` (labelled by its dtype, e.g. FP32), ``8/8`` (every conv a
QuantConv2d) and ``WCC <r>%`` (1x1 convs WCC at keep ratio r, J = 3, 8/8; the others
QuantConv2d) for every available backend. Per variant:

* latency of one inference forward (median, IQR, raw samples), with ``ratio_to_best_runtime``
  against the fastest dense row of the same model, input and dtype (eager or a deployed
  runtime, any precision) and, secondary, ``ratio_to_dense`` against the eager dense variant;
* the deployed dense baselines (:mod:`bench.timing.runtimes`): the dense model exported to ONNX
  Runtime (FP32, static int8 QDQ), compiled with ``torch.compile``, OpenVINO, TensorRT; a row
  per runtime, with ``max_rel_err`` against the eager dense output (no memory measured);
* ``peak_mem_bytes`` of one inference forward. CUDA: ``torch.cuda.max_memory_allocated`` above
  what was allocated before (exact, caching allocator). CPU: the growth of the peak resident set
  (``VmHWM``, reset through ``/proc/self/clear_refs``) over one forward in a *fresh* process,
  with glibc's mmap threshold fixed at 64 KiB so freed activations go back to the OS instead of
  hiding in the heap; this is what the process really needs, kernel workspaces included;
* ``train_saved_bytes``: activation memory of a training step, the bytes of the distinct
  tensors autograd saves for backward (parameters excluded), counted with
  ``torch.autograd.graph.saved_tensors_hooks``; and ``train_peak_bytes``, the peak of one
  forward + backward measured as above. BatchNorm is frozen (eval statistics) in the training
  step so batch 1 works (the ASPP image-pooling branch has 1x1 spatial size).

``python -m bench.timing.model --measure-memory CASE_JSON`` is the fresh process of the CPU
measurement; it prints one JSON line, ``{"infer": bytes, "train": bytes}``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from bench.baseline import best_dense, ratio_to
from bench.rows import ModelRow, check_one_of
from bench.timing.harness import time_callable
from bench.timing.layer import DTYPES, error_text, forced_backend_error
from bench.timing.runtimes import RUNTIME_OPS, build_runtime, max_rel_err, precision_of, runtime_version
from bench.timing.runtimes import spec as runtime_spec

__all__ = ["ModelCase", "MODELS", "VARIANTS", "model_cases", "build_model", "saved_activation_bytes",
           "peak_memory", "run_model_benchmarks"]

VARIANTS = ("dense", "8/8", "WCC 50%", "WCC 25%", "WCC 12.5%")
_DENSE_LABEL = {"float32": "FP32", "float16": "FP16", "bfloat16": "BF16"}
_MMAP_THRESHOLD = "65536"


def _deeplab() -> nn.Module:
    from wcc.models import deeplabv3plus_mobilenetv2

    return deeplabv3plus_mobilenetv2()


def _depth() -> nn.Module:
    from wcc.models import depth_mobilenetv2

    return depth_mobilenetv2()


MODELS: dict[str, Callable[[], nn.Module]] = {
    "deeplabv3plus-mobilenetv2": _deeplab,
    "depth-mobilenetv2": _depth,
}


@dataclass(frozen=True)
class ModelCase:
    """One model row; ``backend`` is set for WCC variants only, ``runtime`` (a deployed
    baseline of :mod:`bench.timing.runtimes`) for the dense variant only."""

    model: str
    variant: str
    batch: int
    height: int
    width: int
    dtype: str = "float32"
    backend: str | None = None
    runtime: str | None = None
    compiled: bool = False  # a WCC variant run as torch.compile(model) (inductor, freezing), not eager

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise ValueError(f"unknown model {self.model!r}; known: {', '.join(MODELS)}")
        check_one_of("variant", self.variant, VARIANTS)
        check_one_of("dtype", self.dtype, DTYPES)
        if self.variant.startswith("WCC") != (self.backend is not None):
            raise ValueError("backend is required for WCC variants and only for them")
        if self.runtime is not None and (self.variant != "dense" or self.runtime not in RUNTIME_OPS):
            raise ValueError(f"runtime must be one of {RUNTIME_OPS} and only with variant 'dense', "
                             f"got {self.runtime!r} with {self.variant!r}")
        if self.compiled and self.keep_ratio is None:
            raise ValueError(f"compiled is for WCC variants (dense: runtime='inductor_fp32'), got {self.variant!r}")

    @property
    def keep_ratio(self) -> float | None:
        m = re.fullmatch(r"WCC ([\d.]+)%", self.variant)
        return float(m.group(1)) / 100 if m else None

    @property
    def label(self) -> str:
        """The paper-style name: ``FP32`` for the dense model in float32, else the variant."""
        if self.runtime is not None:
            return runtime_spec(self.runtime).label
        if self.compiled:
            return f"{self.variant} (torch.compile)"
        return _DENSE_LABEL[self.dtype] if self.variant == "dense" else self.variant

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_row(self) -> dict[str, Any]:
        if self.runtime is not None:
            runtime, precision = runtime_version(self.runtime) or "not installed", \
                precision_of(self.runtime, self.dtype)
        else:
            runtime = f"torch {torch.__version__} ({'inductor' if self.compiled else 'eager'})"
            precision = _DENSE_LABEL[self.dtype].lower() if self.variant == "dense" else "int8"
        return {"model": self.model, "variant": self.label, "backend": self.backend,
                "input": [self.batch, 3, self.height, self.width], "dtype": self.dtype,
                "keep_ratio": self.keep_ratio, "runtime_op": self.runtime, "runtime": runtime,
                "precision": precision}


def model_cases(device: str, quick: bool, backends: list[str], model: str = "deeplabv3plus-mobilenetv2",
                resolution: tuple[int, int] | None = None, dtype: str | None = None,
                batch: int = 1, runtimes: tuple[str, ...] = ()) -> list[ModelCase]:
    """The model grid (docs/design.md §7): 1024x2048 on CUDA (float16), 512x1024 on the CPU (float32), WCC
    variants on every backend in ``backends``. ``quick``: dense and WCC 25% on the first backend
    (the preferred one: ``backends`` come in priority order) at 128x256 (CPU) or 512x1024 (CUDA).
    ``runtimes``: a dense row per deployed baseline, after the eager dense row; with
    ``inductor_fp32`` among them, every WCC variant also gets a ``torch.compile`` row (the
    converted model compiled the same way as the dense baseline)."""
    if resolution is None:
        resolution = {(False, "cuda"): (1024, 2048), (False, "cpu"): (512, 1024),
                      (True, "cuda"): (512, 1024), (True, "cpu"): (128, 256)}[(quick, device)]
    dtype = dtype or ("float32" if device == "cpu" else "float16")
    variants = ("dense", "WCC 25%") if quick else VARIANTS
    wcc_backends = list(backends[:1]) if quick else list(backends)
    out = []
    for variant in variants:
        for backend in (wcc_backends if variant.startswith("WCC") else [None]):
            out.append(ModelCase(model, variant, batch, *resolution, dtype=dtype, backend=backend))
            if backend is not None and "inductor_fp32" in runtimes:
                out.append(ModelCase(model, variant, batch, *resolution, dtype=dtype, backend=backend, compiled=True))
        if variant == "dense":
            out += [ModelCase(model, variant, batch, *resolution, dtype=dtype, runtime=r) for r in runtimes]
    return out


def build_model(case: ModelCase, device: torch.device | str = "cpu") -> nn.Module:
    """The seeded model of ``case``, converted as the paper does, on ``device`` in eval mode."""
    from wcc.config import QuantConfig, WCCConfig
    from wcc.convert import convert
    from wcc.models import paper_keep_fp

    torch.manual_seed(0)
    model = MODELS[case.model]()
    if case.variant == "8/8":
        convert(model, QuantConfig(8, 8), keep_fp=paper_keep_fp(model))
    elif case.keep_ratio is not None:
        assert case.backend is not None  # ModelCase: WCC variants name their backend
        why = forced_backend_error(case.backend)
        if why:
            from wcc.backends import BackendUnavailableError

            raise BackendUnavailableError(why)
        convert(model, WCCConfig(levels=3, keep_ratio=case.keep_ratio, backend=case.backend),
                keep_fp=paper_keep_fp(model))
    return model.to(device=device, dtype=DTYPES[case.dtype]).eval()


def _input(case: ModelCase, device: torch.device | str) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    return torch.randn(case.batch, 3, case.height, case.width, generator=gen).to(device, DTYPES[case.dtype])


def _train_step(model: nn.Module, x: torch.Tensor) -> None:
    """Forward + backward of a training step, BatchNorm frozen (see the module docstring)."""
    model.train()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
    try:
        model(x).float().square().mean().backward()
    finally:
        model.zero_grad(set_to_none=True)
        model.eval()


def saved_activation_bytes(model: nn.Module, x: torch.Tensor) -> int:
    """Bytes of the distinct non-parameter tensors autograd saves for backward in a training
    step of ``model`` on ``x`` (the activation memory training has to keep)."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        # Saved tensors stay alive until backward, so their addresses cannot be reused meanwhile.
        if ptr and ptr not in params and ptr not in seen:
            seen[ptr] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        _train_step(model, x)
    return sum(seen.values())


# ----------------------------------------------------------------------------- peak memory


def _status_kib(key: str) -> int:
    m = re.search(rf"^{key}:\s+(\d+)\s+kB", Path("/proc/self/status").read_text(), re.M)
    if m is None:
        raise OSError(f"no {key} in /proc/self/status")
    return int(m.group(1))


MODES = ("infer", "train")


def _runner(model: nn.Module, x: torch.Tensor, mode: str) -> Callable[[], Any]:
    return (lambda: _train_step(model, x)) if mode == "train" else (lambda: _no_grad(model, x))


def _child_measure(case: ModelCase) -> dict[str, int]:
    """Run in the fresh process: peak RSS growth over one inference forward, then over one
    training step. With the mmap threshold fixed, what the first call freed went back to the
    OS, so the second starts from the same footing."""
    model = build_model(case, "cpu")
    x = _input(case, "cpu")
    out = {}
    for mode in MODES:
        run = _runner(model, x, mode)
        run()  # warm-up: lazy initialisation and kernel caches are not activation memory
        gc.collect()
        before = _status_kib("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        run()
        out[mode] = (_status_kib("VmHWM") - before) * 1024
    return out


def _no_grad(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x)


def _cpu_peaks(case: ModelCase, timeout_s: float = 1800) -> dict[str, int]:
    """Spawn ``python -m bench.timing.model --measure-memory`` and read its JSON line."""
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_=_MMAP_THRESHOLD, OMP_NUM_THREADS=str(torch.get_num_threads()))
    root = str(Path(__file__).resolve().parents[2])  # so the child imports this same bench/wcc
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    proc = subprocess.run(
        [sys.executable, "-m", "bench.timing.model", "--measure-memory", json.dumps(case.to_dict())],
        capture_output=True, text=True, timeout=timeout_s, env=env,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"memory probe process failed (exit {proc.returncode}): {tail}")
    return {k: int(v) for k, v in json.loads(lines[-1]).items()}


def peak_memory(case: ModelCase, device: torch.device | str) -> dict[str, int]:
    """Peak bytes needed by one inference forward (``"infer"``) and one training step
    (``"train"``) of ``case`` on ``device``, above what the model and input already hold."""
    device = torch.device(device)
    if device.type == "cpu":
        return _cpu_peaks(case)
    model = build_model(case, device)
    x = _input(case, device)
    out = {}
    for mode in MODES:
        run = _runner(model, x, mode)
        run()
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        run()
        torch.cuda.synchronize(device)
        out[mode] = int(torch.cuda.max_memory_allocated(device) - before)
    return out


PEAK_METHOD = {
    "cpu": "VmHWM growth over one call in a fresh process (MALLOC_MMAP_THRESHOLD_=65536)",
    "cuda": "torch.cuda.max_memory_allocated above the allocation before the call",
}


# ------------------------------------------------------------------------------------ runner


def _model_group(row: dict[str, Any]) -> tuple[str, tuple[int, ...], str]:
    return (row["model"], tuple(row["input"]), row["dtype"])


def _model_op(row: dict[str, Any]) -> str | None:
    """The row's baseline op: its deployed runtime (``runtime_op``), ``"dense"`` for the eager
    dense variant (labelled by its dtype: FP32, FP16, BF16), else None (not a baseline)."""
    if row.get("runtime_op") is not None:
        return str(row["runtime_op"])
    return "dense" if row["keep_ratio"] is None and row["variant"] in _DENSE_LABEL.values() else None


def _add_model_ratios(rows: list[dict[str, Any]]) -> None:
    """``ratio_to_dense`` over the eager dense row; ``ratio_to_best_runtime`` over the fastest
    dense row (eager or deployed runtime, any precision), named by ``best_runtime``. Both are
    :func:`bench.baseline.best_dense` over the model's group (model, input, dtype)."""
    median = lambda r: r.get("median_s")  # noqa: E731
    eager = best_dense(rows, _model_group, _model_op, median, dense_ops=("dense",))
    deployed = best_dense(rows, _model_group, _model_op, median, dense_ops=("dense", *RUNTIME_OPS))
    for r in rows:
        ref, fastest = eager.get(_model_group(r)), deployed.get(_model_group(r))
        r.update(ratio_to_dense=ratio_to(r, ref), best_runtime=fastest and fastest["variant"],
                 best_runtime_median_s=fastest and fastest["median_s"], ratio_to_best_runtime=ratio_to(r, fastest))


def run_model_benchmarks(
    cases: list[ModelCase],
    device: str | torch.device = "cpu",
    timer: dict[str, Any] | None = None,
    meter: Any = None,
    memory: bool = True,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Time (and measure the memory of) every case; one stored row per case
    (:class:`bench.rows.ModelRow`, as a dict)."""
    from wcc.train._progress import progress_bar  # a bar on a tty, a plain line every few percent in a log

    device = torch.device(device)
    rows = []
    bar = progress_bar(len(cases), "models", enabled=progress, unit="variant")
    for case in cases:
        row: dict[str, Any] = {"peak_mem_method": PEAK_METHOD[device.type] if memory else None, "error": None}
        model: nn.Module | None = None
        try:
            eager = model = build_model(case, device)
            x = _input(case, device)
            # Timed here, inside this iteration, so the closure sees this variant's model and input.
            fn: Callable[[], Any] = lambda: _no_grad(eager, x)  # noqa: E731, B023
            if case.runtime is not None or case.compiled:
                # A compiled WCC model is built like the dense inductor baseline (wcc/ops.py
                # makes the converted model one graph).
                deployed = build_runtime(case.runtime or "inductor_fp32", eager, x, device)
                ref = _no_grad(eager, x)
                row.update(max_rel_err=max_rel_err(deployed.output, ref), setup_s=deployed.setup_s)
                fn, model, eager = deployed.fn, None, None  # type: ignore[assignment]
            window = meter.window() if meter is not None and meter.available else None
            timing = time_callable(fn, device, window=window, **(timer or {}))
            row.update(timing.to_dict(), energy=window.to_dict() if window is not None else None)
        except Exception as exc:  # noqa: BLE001 - a failing variant must not end the run
            row["error"] = error_text(exc)
        if memory and row["error"] is None and (case.runtime is not None or case.compiled):
            row["memory_error"] = "not measured for deployed runtime baselines and compiled models"
        elif memory and row["error"] is None and model is not None:
            try:
                row["train_saved_bytes"] = saved_activation_bytes(model, x)
                model = None
                gc.collect()
                peaks = peak_memory(case, device)
                row["peak_mem_bytes"], row["train_peak_bytes"] = peaks["infer"], peaks["train"]
            except Exception as exc:  # noqa: BLE001
                row["memory_error"] = error_text(exc)
        model = fn = eager = None  # type: ignore[assignment]  # free the variant before the next one
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
        rows.append(ModelRow(**case.to_row(), **row).to_dict())
        bar.update(1)
    bar.close()
    _add_model_ratios(rows)
    return rows


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="fresh-process CPU memory probe of one model case")
    parser.add_argument("--measure-memory", required=True, metavar="CASE_JSON")
    args = parser.parse_args(argv)
    case = ModelCase(**json.loads(args.measure_memory))
    print(json.dumps(_child_measure(case)))
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
