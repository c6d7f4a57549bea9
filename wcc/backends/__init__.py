"""WCC op backends: one op definition, several implementations, explainable dispatch.

Importing this package registers the reference backend and the optional fast backends (``cpu``,
``triton``, ``cuda``); the fast ones import their heavy dependencies (compiler, Triton) only when
first used.
"""

from __future__ import annotations

import torch

from wcc.backends import cpu as _cpu  # noqa: F401  (registers the compiled CPU backend; builds lazily)
from wcc.backends import cuda as _cuda  # noqa: F401  (registers "cuda"; builds lazily, needs a CUDA torch and a GPU)
from wcc.backends import triton as _triton_backend  # noqa: F401  (registers "triton"; Triton itself loads lazily)
from wcc.backends._registry import (
    ENV_VAR,
    Backend,
    BackendStatus,
    BackendUnavailableError,
    backend_status,
    forced_backend,
    get_backend,
    list_backends,
    register_backend,
    requested_backend,
    select_backend,
)
from wcc.backends.cpu import unsigned_act_quant_inference, unsigned_act_quant_scratch
from wcc.backends.reference import select_positions
from wcc.config import WCCConfig
from wcc.quant import WeightCodes
from wcc.rules import keep_count

__all__ = [
    "ENV_VAR",
    "Backend",
    "BackendStatus",
    "BackendUnavailableError",
    "backend_status",
    "get_backend",
    "list_backends",
    "register_backend",
    "select_backend",
    "forced_backend",
    "requested_backend",
    "keep_count",
    "select_positions",
    "wcc_conv",
    "unsigned_act_quant_inference",
    "unsigned_act_quant_scratch",
]


def wcc_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, act_alpha: torch.Tensor,
             config: WCCConfig, weight_codes: WeightCodes | None = None) -> torch.Tensor:
    """Run the WCC op on the backend chosen for ``x`` and ``config`` (see ``select_backend``).

    Shapes: x ``(N, C_in, H, W)``, weight ``(C_out, C_in)``, bias ``(C_out,)`` -> ``(N, C_out, H, W)``.
    ``weight_codes``: optional integer form of ``weight`` (see :meth:`Backend.wcc_conv`).
    """
    return select_backend(x, config).wcc_conv(x, weight, bias, act_alpha, config, weight_codes)
