"""The ``cuda`` backend: compiled CUDA C++ kernels for the WCC op on CUDA tensors.

The same algorithm as the ``cpu`` backend (DESIGN 3.4 and 8), for a GPU
(``csrc/wcc_cuda_kernels.cu``, bound to torch by ``csrc/wcc_cuda_binding.cpp``):

* the Haar transform fused with the per-position channel energy (one pass over x, nothing
  stored), then a radix top-k selection per image (kept positions ascending, plus a slot map);
* a second pass over x writes only the kept coefficients, with the activation fake-quant fused
  (or, for <= 8-bit layers whose integer weight is given, their int8 codes);
* the kept-column GEMM: WMMA tensor cores for float16/bfloat16, IEEE float32 otherwise (no
  TF32, like the reference's matmul), dp4a int8 with exact int32 sums for integer codes;
* the scatter fused with the inverse transform, the crop and the bias;
* a backward (``torch.autograd.Function``) with the reference's gradients: straight-through
  inside the clip, learned-step alpha gradient, the kept index set a constant.

Built by ``torch.utils.cpp_extension`` on first use or by ``nox -s build`` (``cuda_build.py``)
when torch has CUDA and a GPU is visible; ``auto`` prefers it for CUDA tensors (then ``triton``,
then ``reference``). Supports CUDA float32/float16/bfloat16 tensors and ``levels <= 3`` (the
per-thread transform tile is 2^J x 2^J); everything else is refused with a reason.

Importing this module needs neither a GPU nor a compiler: the build starts on first use.
"""

from __future__ import annotations

import torch

from wcc.backends._registry import Backend, BackendUnavailableError, register_backend
from wcc.backends.reference import REFERENCE, has_nonfinite, keep_count
from wcc.config import WCCConfig

__all__ = ["CUDA", "MAX_LEVELS", "PRIORITY", "SUPPORTED_DTYPES", "CUDABackend"]

PRIORITY = 30  # auto on CUDA tensors: cuda (30), triton (20), then reference (0); cpu (10) refuses them
SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
MAX_LEVELS = 3  # kept in sync with kMaxLevels in wcc_cuda_kernels.cu


def _alpha_value(act_alpha: torch.Tensor, dtype: torch.dtype, act_bits: int) -> float:
    # The reference quantizes with alpha cast to the activation dtype; a Python float holds that
    # value exactly for float32, float16 and bfloat16.
    if not act_bits:
        return 1.0
    return float(act_alpha.detach().to(dtype))


class _WCCFunction(torch.autograd.Function):
    """Autograd wrapper of the compiled forward/backward (inputs as in :meth:`CUDABackend.wcc_conv`)."""

    @staticmethod
    def forward(ctx, x, weight, bias, act_alpha, levels: int, k: int, act_bits: int):  # type: ignore[override]
        alpha = _alpha_value(act_alpha, x.dtype, act_bits)
        y, kept, saved = torch.ops.wcc_cuda.forward(x, weight, bias, alpha, levels, k, act_bits, True)
        ctx.save_for_backward(weight, saved, kept)
        ctx.alpha, ctx.levels, ctx.act_bits = alpha, levels, act_bits
        ctx.alpha_meta = (act_alpha.shape, act_alpha.dtype)
        return y

    @staticmethod
    def backward(ctx, gy):  # type: ignore[override]
        weight, saved, kept = ctx.saved_tensors
        need_x, need_w, need_b, need_a = ctx.needs_input_grad[:4]
        gx = gw = gb = ga = None
        if need_x or need_w or (need_a and ctx.act_bits):
            gx, gw, ga = torch.ops.wcc_cuda.backward(
                gy, weight, saved, kept, ctx.alpha, ctx.levels, ctx.act_bits, need_x, need_w
            )
            gx = gx if need_x else None
            gw = gw if need_w else None
            if need_a and ctx.act_bits and ga is not None:
                shape, dtype = ctx.alpha_meta
                ga = ga.to(dtype).reshape(shape)
            else:
                ga = None
        if need_b:
            gb = gy.sum(dim=(0, 2, 3))
        return gx, gw, gb, ga, None, None, None


class CUDABackend(Backend):
    """Compiled CUDA C++ backend for CUDA tensors (float32/float16/bfloat16, levels <= 3)."""

    name = "cuda"

    def unavailable_reason(self) -> str | None:
        from wcc.backends import (
            cuda_build,  # lazily: the build machinery is only needed here
        )

        reason = cuda_build.status()  # cheap checks first: no compiler starts on a machine without a GPU
        if reason is not None:
            return reason
        return cuda_build.load()

    def details(self) -> str | None:
        major, minor = torch.cuda.get_device_capability()
        gemm = "float16 tensor cores" + (", bfloat16 tensor cores" if major >= 8 else "")
        return (f"GPU {torch.cuda.get_device_name()} (sm_{major}{minor}); GEMM: {gemm}, float32 IEEE, "
                f"int8 dp4a for <= 8-bit layers with integer weights")

    def unsupported_reason(self, x: torch.Tensor, config: WCCConfig) -> str | None:
        if x.device.type != "cuda":
            return f"input is on {x.device}; this backend runs CUDA tensors only"
        if x.dtype not in SUPPORTED_DTYPES:
            return f"dtype {x.dtype} is not supported by the cuda backend (float32, float16 or bfloat16)"
        if config.levels > MAX_LEVELS:
            return (f"levels={config.levels} is not supported by the cuda backend (at most {MAX_LEVELS}: each thread "
                    f"transforms a 2**levels tile); the reference handles it")
        return None

    def _check_call(self, x, weight, bias, act_alpha) -> None:
        # The input checks every backend shares (wcc.layers.check_input; lazy: wcc.layers imports
        # wcc.backends), then this backend's own argument checks.
        from wcc.layers import check_input

        reason = self.unavailable_reason()
        if reason is not None:
            raise BackendUnavailableError(f"WCC backend 'cuda' is unavailable: {reason}")
        if weight.dim() != 2:
            raise ValueError(f"the cuda backend expects a (C_out, C_in) weight, got shape {tuple(weight.shape)}")
        check_input(x, weight.shape[1], "WCC cuda backend")
        if bias is not None and tuple(bias.shape) != (weight.shape[0],):
            raise ValueError(f"bias must have shape ({weight.shape[0]},), got {tuple(bias.shape)}")
        if act_alpha.numel() != 1:
            raise ValueError(f"act_alpha must be a scalar, got shape {tuple(act_alpha.shape)}")
        for name, t in (("weight", weight), ("bias", bias)):
            if t is not None and t.device != x.device:
                raise ValueError(f"cuda backend: {name} is on {t.device} but the input is on {x.device}")

    def wcc_conv(self, x, weight, bias, act_alpha, config, weight_codes=None):
        """See :meth:`Backend.wcc_conv`. Under autocast the op runs in the autocast dtype, as the
        reference's matmul would. ``weight_codes`` (int8) selects the integer GEMM in inference
        for layers with ``act_bits <= 8``."""
        self._check_call(x, weight, bias, act_alpha)
        dtype = x.dtype
        if torch.is_autocast_enabled(x.device.type):
            dtype = torch.get_autocast_dtype(x.device.type)
        k = keep_count(x.shape[-2], x.shape[-1], config)  # also validates `levels` for this size
        if has_nonfinite(x):  # the one NaN/Inf behaviour (reference docstring); not checked on a GPU here
            return REFERENCE.wcc_conv(x, weight, bias, act_alpha, config)
        act_bits = config.act_bits or 0
        with torch.autocast(x.device.type, enabled=False):
            xd, wd = x.to(dtype), weight.to(dtype)
            bd = bias.to(dtype) if bias is not None else None
            tensors = (x, weight, bias, act_alpha)
            if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors):
                return _WCCFunction.apply(xd, wd, bd, act_alpha, config.levels, k, act_bits)
            alpha = _alpha_value(act_alpha, dtype, act_bits)
            codes, step = None, 1.0
            if weight_codes is not None and 0 < act_bits <= 8:
                if weight_codes.codes.shape != weight.shape or weight_codes.codes.dtype != torch.int8:
                    raise ValueError(
                        f"cuda backend: weight_codes must be int8 shaped like the weight {tuple(weight.shape)}, "
                        f"got {weight_codes.codes.dtype} {tuple(weight_codes.codes.shape)}"
                    )
                codes, step = weight_codes.codes.to(x.device), weight_codes.step
            y, _, _ = torch.ops.wcc_cuda.forward(xd, wd, bd, alpha, config.levels, k, act_bits, False, codes, step)
            return y

    def keep_indices(self, x: torch.Tensor, config: WCCConfig) -> torch.Tensor:
        reason = self.unavailable_reason()
        if reason is not None:
            raise BackendUnavailableError(f"WCC backend 'cuda' is unavailable: {reason}")
        k = keep_count(x.shape[-2], x.shape[-1], config)
        if has_nonfinite(x):
            return REFERENCE.keep_indices(x, config)
        with torch.no_grad():
            return torch.ops.wcc_cuda.keep_indices(x.detach(), config.levels, k)


CUDA = register_backend(CUDABackend(), priority=PRIORITY)
