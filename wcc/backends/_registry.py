"""Backend registry and the explainable ``backend="auto"`` dispatch.

A backend implements one op, :meth:`Backend.wcc_conv`, with the semantics of the reference
backend (docs/design.md §3.4). Each backend says whether it can run at all on this machine
(:meth:`Backend.unavailable_reason`) and whether it supports a given call
(:meth:`Backend.unsupported_reason`). ``auto`` takes the first backend, in priority order,
that has no reason to refuse; when none fits the error lists every backend's reason.

``WCC_BACKEND=<name>`` in the environment forces a backend (for debugging); it overrides the
config's ``backend`` field. This module is the only reader of that variable: everything else
asks :func:`forced_backend` or :func:`requested_backend`.
"""

from __future__ import annotations

import abc
import os
from dataclasses import dataclass

import torch

from wcc.config import WCCConfig
from wcc.quant import WeightCodes

__all__ = [
    "Backend",
    "BackendStatus",
    "BackendUnavailableError",
    "ENV_VAR",
    "register_backend",
    "get_backend",
    "list_backends",
    "backend_status",
    "select_backend",
    "forced_backend",
    "requested_backend",
]

ENV_VAR = "WCC_BACKEND"


class BackendUnavailableError(RuntimeError):
    """No backend (or not the requested one) can run this call; the message says why."""


class Backend(abc.ABC):
    """One implementation of the WCC op.

    Subclasses set ``name`` and implement the three methods below. They must not import
    optional dependencies (Triton, a compiler) at module import time: do it lazily in
    :meth:`unavailable_reason` / :meth:`wcc_conv`, so ``import wcc`` never needs them.
    """

    name: str = ""

    def unavailable_reason(self) -> str | None:
        """Why this backend cannot run on this machine at all, or None when it can."""
        return None

    def details(self) -> str | None:
        """Optional one-line description of how it will run here (shown by ``python -m wcc.info``)."""
        return None

    @abc.abstractmethod
    def unsupported_reason(self, x: torch.Tensor, config: WCCConfig) -> str | None:
        """Why this backend cannot run this particular call, or None when it can."""

    @abc.abstractmethod
    def wcc_conv(
        self,
        x: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        act_alpha: torch.Tensor,
        config: WCCConfig,
        weight_codes: WeightCodes | None = None,
    ) -> torch.Tensor:
        """The WCC op.

        Args:
            x: input ``(N, C_in, H, W)``.
            weight: (already quantized) 1x1 weight ``(C_out, C_in)``.
            bias: ``(C_out,)`` or None; added in the spatial domain.
            act_alpha: scalar clip of the signed activation quantizer.
            config: levels, keep ratio and act_bits are read from it.
            weight_codes: optionally, ``weight`` in integer form (a hint: a backend may run an
                integer GEMM on it, the result must equal the float op to float rounding;
                backends without integer GEMMs ignore it). Only given without gradients.

        Returns:
            ``(N, C_out, H, W)``.
        """

    @abc.abstractmethod
    def keep_indices(self, x: torch.Tensor, config: WCCConfig) -> torch.Tensor:
        """Kept wavelet positions ``(N, k)``, sorted ascending, into the flattened padded
        ``H' * W'`` Mallat layout. Used to test that backends select the same support."""


@dataclass(frozen=True)
class BackendStatus:
    name: str
    priority: int
    available: bool
    reason: str | None


_REGISTRY: dict[str, tuple[int, Backend]] = {}


def register_backend(backend: Backend, priority: int) -> Backend:
    """Register ``backend``; ``auto`` tries backends by descending ``priority``."""
    if not backend.name:
        raise ValueError("a backend needs a non-empty name")
    _REGISTRY[backend.name] = (priority, backend)
    return backend


def _ordered() -> list[Backend]:
    return [b for _, b in sorted(_REGISTRY.values(), key=lambda pb: -pb[0])]


def list_backends() -> list[str]:
    """Registered backend names, in ``auto`` order."""
    return [b.name for b in _ordered()]


def get_backend(name: str) -> Backend:
    try:
        return _REGISTRY[name][1]
    except KeyError:
        raise BackendUnavailableError(
            f"unknown WCC backend {name!r}; registered backends: {', '.join(list_backends())}"
        ) from None


def backend_status() -> list[BackendStatus]:
    """Every backend with its availability on this machine (never raises)."""
    out = []
    for prio, b in sorted(_REGISTRY.values(), key=lambda pb: -pb[0]):
        try:
            reason = b.unavailable_reason()
        except Exception as exc:  # a probe must never take the whole report down
            reason = f"probe failed: {type(exc).__name__}: {exc}"
        out.append(BackendStatus(b.name, prio, reason is None, reason))
    return out


def _refusal(backend: Backend, x: torch.Tensor, config: WCCConfig) -> str | None:
    reason = backend.unavailable_reason()
    if reason is None:
        reason = backend.unsupported_reason(x, config)
    return reason


def forced_backend() -> str | None:
    """The backend named by ``WCC_BACKEND`` (which overrides every config), or None when unset."""
    return os.environ.get(ENV_VAR, "").strip() or None


def requested_backend(config: WCCConfig) -> str:
    """The backend name a call under ``config`` asks for: ``WCC_BACKEND`` when set, else
    ``config.backend`` (possibly ``"auto"``)."""
    return forced_backend() or config.backend


def select_backend(x: torch.Tensor, config: WCCConfig) -> Backend:
    """The backend that runs ``x`` under ``config`` (env override, explicit name or auto)."""
    forced = forced_backend()
    name = requested_backend(config)
    if name != "auto":
        backend = get_backend(name)
        reason = _refusal(backend, x, config)
        if reason is not None:
            origin = f"{ENV_VAR}={forced}" if forced else f"config.backend={name!r}"
            raise BackendUnavailableError(f"WCC backend {name!r} (from {origin}) cannot run this call: {reason}")
        return backend
    reasons = []
    for backend in _ordered():
        reason = _refusal(backend, x, config)
        if reason is None:
            return backend
        reasons.append(f"  {backend.name}: {reason}")
    raise BackendUnavailableError(
        f"no WCC backend supports input {tuple(x.shape)} {x.dtype} on {x.device}:\n" + "\n".join(reasons)
    )
