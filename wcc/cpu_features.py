"""What the host CPU offers for int8 arithmetic: the one home of that question.

Two places ask it: the ``cpu`` backend (is an int8 GEMM faster than a float one here?) and the
benchmark suite (do ONNX Runtime's u8 x s8 kernels saturate here?). Both hinge on whether the CPU
has int8 dot-product instructions (x86 VNNI or AMX). Without them an x86 CPU multiplies int8 with
AVX2 ``vpmaddubsw``, which adds pairs of u8 x s8 products into a saturating int16, and torch's
int8 matmul falls back to a generic loop (docs/design.md §3.8).
"""

from __future__ import annotations

import functools
import platform

import torch

__all__ = ["is_x86", "int8_dot_product_isa"]


def is_x86() -> bool:
    """True on x86-64 hosts."""
    return platform.machine().lower() in ("x86_64", "amd64")


@functools.lru_cache(maxsize=None)
def int8_dot_product_isa() -> str | None:
    """``"AMX"`` or ``"VNNI"``: the int8 dot-product instructions torch sees on this CPU (AMX
    first: it implies VNNI); None when it has neither (AVX2-only x86, or not x86)."""
    for name, probe in (("AMX", "_is_amx_tile_supported"), ("VNNI", "_is_vnni_supported")):
        check = getattr(torch.cpu, probe, None)
        if check is not None and check():
            return name
    return None
