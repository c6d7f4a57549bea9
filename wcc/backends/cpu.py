"""The ``cpu`` backend: compiled, fused kernels for the WCC op on CPU tensors.

Same op as the reference backend (docs/design.md §3.4), organised for memory traffic (docs/design.md §8): the
Haar transform is fused with the per-position channel energy in one pass over the input, the
top-k is a selection (radix histogram, then ``nth_element`` on one bin), and the GEMM runs on
the kept columns only, one band of 2^J rows at a time while they are in cache, with the scatter
fused into the inverse transform and the bias. With quantized activations and no gradient
needed, the transformed input is kept as integer quantization codes (int8 up to 8 bits), which
carry exactly the fake-quant values; when the caller also passes the weight's codes
(:class:`wcc.quant.WeightCodes`, as :class:`~wcc.layers.WCCConv2d` does in inference), the GEMM
runs on the int8 codes with exact int32 sums (``torch._int_mm``: oneDNN, VNNI where the CPU has
it, about four times the float GEMM's throughput; on AVX2 CPUs without VNNI the kernels' own
exact ``vpmaddubsw`` GEMM, about 1.5 times). Large outputs are allocated on transparent
huge pages (a fresh 4 KiB-paged output costs a page fault per 4 KiB on every call), and freed
output blocks are reused (up to 256 MiB), so a layer's output does not fault in and zero fresh
pages on every call.
In inference a channels-last input is read in place and gets a channels-last output (a
channels-last compiled graph then holds no transposes around the op); training converts to NCHW.
See ``csrc/wcc_cpu.cpp`` for the details and ``cpu_build.py`` for building and caching.

Semantics equal the reference: bit-identical coefficients, quantized values and inverse
transform (same operation order); the GEMM and the energy sum differ only by float rounding
(order of the float sums; in the integer GEMM, one rounding of each weight and activation
step), so the kept set is the same on tie-free inputs (on exact ties either choice is a valid
top-k). Backward (x, weight, act_alpha, bias) is a ``torch.autograd.Function`` with the
reference's gradients: straight-through inside the clip, learned-step alpha gradient, the kept
index set a constant.

Supports CPU float32/float64 tensors without autocast and ``levels <= 12``; everything else is
refused with a reason, and ``auto`` moves on to the next backend.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
from typing import Iterator

import torch

from wcc.backends._compiled import alpha_value, wcc_function
from wcc.backends._registry import Backend, BackendUnavailableError, register_backend
from wcc.config import WCCConfig
from wcc.cpu_features import int8_dot_product_isa
from wcc.haar import padded_size
from wcc.rules import keep_count

__all__ = ["CPUBackend", "CPU", "unsigned_act_quant_inference", "unsigned_act_quant_scratch"]

_DTYPES = (torch.float32, torch.float64)
_MAX_LEVELS = 12
_MAX_POSITIONS = 2**31 - 1  # positions are int32 inside the kernels


_WCCFunction = wcc_function("wcc_cpu")  # autograd around torch.ops.wcc_cpu (wcc.backends._compiled)


@functools.cache
def _int8_gemm_off() -> str | None:
    """Why the kernels multiply in float instead of on int8 codes (None: they use an int8 GEMM).

    Built for an AVX2 CPU without int8 dot products, the kernels carry their own exact integer
    GEMM (``vpmaddubsw`` on |x| and w with x's sign, which cannot saturate for codes in
    [-127, 127]: 61 GMAC/s per core measured against 42 for float32 ``torch.mm``). Elsewhere
    the integer GEMM is torch's int8 x int8 -> int32 matmul (oneDNN), fast only where the CPU
    has int8 dot-product instructions (VNNI, AMX): on an AVX2-only CPU torch runs a generic
    loop, measured 55x slower than the float GEMM of the same shape (1.65 s against 0.03 s for
    256x256 @ 256x8192 on one thread). Both paths give the reference's result up to float
    rounding (docs/design.md §3.8).
    """
    if _int8_gemm_name() == "avx2-quads":
        return None
    try:
        a = torch.tensor([[1, -2], [3, 4]], dtype=torch.int8)
        if torch._int_mm(a, a).tolist() != [[-5, -10], [15, 10]]:
            return "torch._int_mm gives a wrong product on this CPU"
    except (AttributeError, RuntimeError, NotImplementedError):
        return "this torch build has no CPU torch._int_mm"
    if int8_dot_product_isa() is None:
        return "this CPU has neither VNNI nor AMX, where torch._int_mm is a slow generic loop"
    return None


def _int8_gemm_name() -> str | None:
    """The compiled kernels' integer GEMM: ``"avx2-quads"`` (their own, built for AVX2 without
    VNNI/AMX) or ``"torch._int_mm"``; None when the kernels are not loaded."""
    from wcc.backends import cpu_build

    if cpu_build.load() is not None:
        return None
    return str(torch.ops.wcc_cpu.int8_gemm())


class CPUBackend(Backend):
    """Compiled C++/OpenMP backend for CPU tensors (float32/float64)."""

    name = "cpu"

    def unavailable_reason(self) -> str | None:
        from wcc.backends import cpu_build  # lazily: the build machinery is only needed here

        return cpu_build.load()

    def details(self) -> str | None:
        off = _int8_gemm_off()
        gemm = f"int8 ({_int8_gemm_name()}) for <= 8-bit layers" if off is None else f"float ({off})"
        huge = "off (WCC_CPU_HUGE_PAGES=0)" if os.environ.get("WCC_CPU_HUGE_PAGES") == "0" else "on (>= 4 MiB)"
        return f"GEMM: {gemm}; huge-page outputs: {huge}"

    def unsupported_reason(self, x: torch.Tensor, config: WCCConfig) -> str | None:
        if x.device.type != "cpu":
            return f"input is on {x.device}; this backend runs CPU tensors only"
        if x.dtype not in _DTYPES:
            return f"dtype {x.dtype} is not supported (float32 and float64 are)"
        if torch.is_autocast_enabled("cpu"):
            return "CPU autocast is active (mixed precision runs on the reference backend)"
        if config.levels > _MAX_LEVELS:
            return f"levels={config.levels} > {_MAX_LEVELS}"
        if x.dim() == 4:
            positions = padded_size(x.shape[-2], config.levels) * padded_size(x.shape[-1], config.levels)
            if positions > _MAX_POSITIONS:
                return f"{positions} wavelet positions per image exceed the kernels' int32 indices"
        return None

    def _require_kernels(self) -> None:
        # Called directly (get_backend("cpu").wcc_conv) the kernels may not be loaded yet.
        reason = self.unavailable_reason()
        if reason is not None:
            raise BackendUnavailableError(f"WCC backend 'cpu' is unavailable: {reason}")

    def wcc_conv(self, x, weight, bias, act_alpha, config, weight_codes=None):
        self._require_kernels()
        if x.dim() != 4:
            raise ValueError(f"cpu backend: expected x of shape (N, C_in, H, W), got {tuple(x.shape)}")
        others = [("weight", weight), ("bias", bias), ("act_alpha", act_alpha)]
        for name, t in others:
            if t is not None and t.device.type != "cpu":
                raise ValueError(f"cpu backend: {name} is on {t.device} but the input is on the CPU")
        for name, t in others[:2]:
            if t is not None and t.dtype != x.dtype:
                raise TypeError(
                    f"cpu backend: {name} dtype {t.dtype} differs from the input's {x.dtype}; "
                    f"convert the layer (e.g. layer.to({x.dtype}))"
                )
        if act_alpha.numel() != 1:
            raise ValueError(f"cpu backend: act_alpha must be a scalar, got shape {tuple(act_alpha.shape)}")
        if weight.dim() != 2 or weight.shape[1] != x.shape[1]:
            raise ValueError(
                f"cpu backend: weight must be (C_out, C_in={x.shape[1]}), got {tuple(weight.shape)}"
            )
        k = keep_count(x.shape[-2], x.shape[-1], config)
        act_bits = config.act_bits or 0  # 0: no activation quantization
        tensors = (x, weight, bias, act_alpha)
        if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors):
            return _WCCFunction.apply(x, weight, bias, act_alpha, config.levels, k, act_bits)
        alpha = alpha_value(act_alpha, x.dtype, act_bits)
        if weight_codes is not None and (weight_codes.codes.shape != weight.shape
                                         or weight_codes.codes.dtype != torch.int8):
            raise ValueError(
                f"cpu backend: weight_codes must be int8 shaped like the weight {tuple(weight.shape)}, "
                f"got {weight_codes.codes.dtype} {tuple(weight_codes.codes.shape)}"
            )
        codes, step = None, 1.0
        if weight_codes is not None and 0 < act_bits <= 8 and _int8_gemm_off() is None:
            codes, step = weight_codes.codes, weight_codes.step
        y, _, _ = torch.ops.wcc_cpu.forward(x, weight, bias, alpha, config.levels, k, act_bits, False, codes, step)
        return y

    def keep_indices(self, x: torch.Tensor, config: WCCConfig) -> torch.Tensor:
        self._require_kernels()
        k = keep_count(x.shape[-2], x.shape[-1], config)
        with torch.no_grad():
            return torch.ops.wcc_cpu.keep_indices(x.detach(), config.levels, k)


def unsigned_act_quant_inference(x: torch.Tensor, alpha: torch.Tensor, bits: int) -> torch.Tensor | None:
    """:func:`wcc.quant.unsigned_act_quant` in one fused pass, for calls that need no gradient.

    Bit-identical to the reference quantizer (same operations, same order) but one pass over
    ``x`` instead of six, keeping its memory format. Returns None when the compiled kernels are
    unavailable or ``x`` is not a CPU float32/float64 tensor; the caller then uses the reference.
    """
    if x.device.type != "cpu" or x.dtype not in _DTYPES or torch.is_autocast_enabled("cpu"):
        return None
    if alpha.device.type != "cpu":
        return None
    from wcc.backends import cpu_build

    if cpu_build.load() is not None:
        return None
    return torch.ops.wcc_cpu.unsigned_fake_quant(x, float(alpha.detach().to(x.dtype)), bits)


class _ReusableBuffer:
    """One CPU buffer lent out for short-lived intermediates, one borrower at a time.

    torch's CPU allocator returns large blocks to the OS, so a fresh multi-megabyte tensor costs
    a page fault per 4 KiB on every call (often more than the arithmetic on it). A borrower that
    finds the buffer lent out (another thread), or needs more than ``max_bytes``, gets None.
    """

    def __init__(self, max_bytes: int) -> None:
        self._lock = threading.Lock()
        self._storage: torch.Tensor | None = None
        self._max_bytes = max_bytes

    @contextlib.contextmanager
    def borrow(self, like: torch.Tensor) -> Iterator[torch.Tensor | None]:
        """A tensor with ``like``'s shape, strides and dtype (``like`` contiguous in some memory
        format), valid in the block."""
        need = like.numel()
        if need * like.element_size() > self._max_bytes or not self._lock.acquire(blocking=False):
            yield None
            return
        try:
            storage = self._storage
            if storage is None or storage.dtype != like.dtype or storage.numel() < need:
                self._storage = storage = None  # free the old one before allocating
                with torch.inference_mode(False):  # a normal tensor: writable in and out of inference mode
                    storage = self._storage = torch.empty(need, dtype=like.dtype)
            yield storage[:need].as_strided(like.shape, like.stride())
        finally:
            self._lock.release()


_QUANT_BUFFER = _ReusableBuffer(max_bytes=512 * 2**20)


@contextlib.contextmanager
def unsigned_act_quant_scratch(
    x: torch.Tensor, alpha: torch.Tensor, bits: int
) -> Iterator[torch.Tensor | None]:
    """Like :func:`unsigned_act_quant_inference`, but the result lives in a reused buffer.

    For a quantized input that is consumed at once (QuantConv2d feeds it to its conv and drops
    it): the result is valid only inside the ``with`` block. Yields None when the kernels or the
    buffer are unavailable; the caller then falls back to :func:`unsigned_act_quant_inference`.
    """
    if (x.device.type != "cpu" or x.dtype not in _DTYPES or torch.is_autocast_enabled("cpu")
            or alpha.device.type != "cpu"
            or not (x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last))):
        yield None
        return
    from wcc.backends import cpu_build

    if cpu_build.load() is not None:
        yield None
        return
    with _QUANT_BUFFER.borrow(x) as out:
        if out is not None:
            torch.ops.wcc_cpu.unsigned_fake_quant.out(x, float(alpha.detach().to(x.dtype)), bits, out=out)
        yield out


CPU = register_backend(CPUBackend(), priority=10)
