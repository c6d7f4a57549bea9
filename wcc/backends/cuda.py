"""The ``cuda`` backend: compiled CUDA C++ kernels for the WCC op on CUDA tensors.

The same algorithm as the ``cpu`` backend (docs/design.md §3.4 and §8), for a GPU
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

from wcc.backends._compiled import alpha_value, wcc_function
from wcc.backends._registry import Backend, BackendUnavailableError, register_backend
from wcc.backends.reference import REFERENCE, has_nonfinite
from wcc.config import WCCConfig
from wcc.rules import check_op_args, keep_count

__all__ = ["CUDA", "MAX_LEVELS", "PRIORITY", "SUPPORTED_DTYPES", "CUDABackend"]

PRIORITY = 30  # auto on CUDA tensors: cuda (30), triton (20), then reference (0); cpu (10) refuses them
SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
MAX_LEVELS = 3  # kept in sync with kMaxLevels in wcc_cuda_kernels.cu


_WCCFunction = wcc_function("wcc_cuda")  # autograd around torch.ops.wcc_cuda (wcc.backends._compiled)


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
        reason = self.unavailable_reason()
        if reason is not None:
            raise BackendUnavailableError(f"WCC backend 'cuda' is unavailable: {reason}")
        check_op_args(x, weight, bias, act_alpha, "cuda")  # the checks every backend shares
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
            alpha = alpha_value(act_alpha, dtype, act_bits)
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
