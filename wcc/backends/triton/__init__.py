"""The ``triton`` backend: fused WCC kernels for CUDA tensors.

Kernels (``_kernels.py``): the forward Haar fused with the per-position channel norm, a GEMM
over the kept columns with the gather and the activation fake-quant fused into its loads
(float16/bfloat16 tensor cores or IEEE float32, float32 accumulation), and the scatter fused
with the inverse Haar, the crop and the bias. Selection is ``torch.topk`` on the score (see
``_ops.select_kept``); the backward is a ``torch.autograd.Function`` (``_autograd.py``).

``backend="auto"`` picks it for CUDA tensors. For tests without a GPU, ``TRITON_INTERPRET=1``
together with ``WCC_BACKEND=triton`` (or ``backend="triton"``) runs the same kernels on CPU
tensors in Triton's interpreter; ``auto`` never sends CPU tensors there (it is very slow).

Importing this package needs neither Triton nor a GPU: Triton is imported on first use.
"""

from __future__ import annotations

import functools
import importlib.util
import os

import torch

from wcc.backends._registry import ENV_VAR, Backend, register_backend, requested_backend
from wcc.backends.reference import REFERENCE, has_nonfinite
from wcc.config import WCCConfig
from wcc.rules import check_op_args, keep_count

__all__ = ["TritonBackend", "PRIORITY", "SUPPORTED_DTYPES", "MAX_LEVELS"]

PRIORITY = 20  # above the cpu fast backend (10) and the reference (0)
SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
MAX_LEVELS = 3  # the per-block transform matrix is 4^J x 4^J (kept in sync with _ops)

_INSTALL_HINT = "pip install 'wcc-bench[triton]'"


def _interpret_requested() -> bool:
    """``TRITON_INTERPRET`` as Triton reads it (1/true/yes/on/y), without importing Triton."""
    return os.environ.get("TRITON_INTERPRET", "").strip().lower() in ("1", "true", "yes", "on", "y")


@functools.cache
def _triton_installed() -> bool:
    # Asked on every auto dispatch: the module search costs ~40 us, once is enough per process.
    return importlib.util.find_spec("triton") is not None


class TritonBackend(Backend):
    name = "triton"

    def unavailable_reason(self) -> str | None:
        if not _triton_installed():
            return f"triton is not installed ({_INSTALL_HINT})"
        if not _interpret_requested() and not torch.cuda.is_available():
            return "no CUDA device (set TRITON_INTERPRET=1 to run the kernels on CPU)"
        return None

    def _requested_by_name(self, config: WCCConfig) -> bool:
        return requested_backend(config) == self.name

    def unsupported_reason(self, x: torch.Tensor, config: WCCConfig) -> str | None:
        if x.dtype == torch.float64:
            return "float64 is not supported by the triton backend; the reference handles it"
        if x.dtype not in SUPPORTED_DTYPES:
            return f"dtype {x.dtype} is not supported by the triton backend (float16, bfloat16 or float32)"
        if config.levels > MAX_LEVELS:
            return (f"levels={config.levels} is not supported by the triton backend (at most {MAX_LEVELS}: "
                    f"its per-block transform matrix has 4**levels entries per side); the reference handles it")
        if x.device.type == "cuda":
            return None
        if x.device.type != "cpu":
            return f"device {x.device} is not supported by the triton backend (CUDA, or CPU with TRITON_INTERPRET=1)"
        if not _interpret_requested():
            return "CPU tensors run on the triton backend only in the Triton interpreter: set TRITON_INTERPRET=1"
        if not self._requested_by_name(config):
            return (f"CPU tensors use the triton backend only when it is asked for by name ({ENV_VAR}=triton or "
                    f"backend='triton'): the Triton interpreter is a testing tool, far slower than the other backends")
        return None

    def _check_call(self, x, weight, bias, act_alpha) -> None:
        check_op_args(x, weight, bias, act_alpha, "triton")

    def wcc_conv(self, x, weight, bias, act_alpha, config, weight_codes=None):
        """See :meth:`Backend.wcc_conv`. Under autocast the op runs in the autocast dtype, as
        the reference's matmul would; gradients flow back through the casts. ``weight_codes``
        is not used (float GEMMs only)."""
        from wcc.backends.triton._autograd import WCCTritonFunction

        self._check_call(x, weight, bias, act_alpha)
        dtype = x.dtype
        if torch.is_autocast_enabled(x.device.type):
            dtype = torch.get_autocast_dtype(x.device.type)
        # The reference computes the quantizer in the activation dtype (wcc.quant._alpha_like).
        alpha = act_alpha.reshape(()).to(device=x.device, dtype=dtype)
        k = keep_count(x.shape[-2], x.shape[-1], config)
        if has_nonfinite(x):
            return REFERENCE.wcc_conv(x, weight, bias, act_alpha, config)
        with torch.autocast(x.device.type, enabled=False):
            return WCCTritonFunction.apply(
                x.to(dtype), weight.to(dtype), bias, alpha, config.levels, k, config.act_bits
            )

    def keep_indices(self, x: torch.Tensor, config: WCCConfig) -> torch.Tensor:
        from wcc.backends.triton import _ops

        k = keep_count(x.shape[-2], x.shape[-1], config)  # first: it validates `levels` for this size
        if has_nonfinite(x):
            return REFERENCE.keep_indices(x, config)
        with torch.no_grad():
            _, score = _ops.haar_score(x, config.levels, store_coeffs=False)
            return _ops.select_kept(score, k)


TRITON = register_backend(TritonBackend(), priority=PRIORITY)
