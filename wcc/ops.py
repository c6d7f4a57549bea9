"""The WCC operators as real PyTorch operators (``torch.library``), what the layers call.

* ``torch.ops.wcc.conv`` - the WCC op (docs/design.md §3.4) on the backend that
  :func:`wcc.backends.select_backend` picks for the call;
* ``torch.ops.wcc.unsigned_act_quant`` - QuantConv2d's unsigned activation fake-quant
  (docs/design.md §3.3), the ``cpu`` backend's fused one-pass kernel where it runs, else the
  reference formula.

Each has a schema, one kernel for every device (it dispatches through the backend registry, so a
CPU tensor runs on ``cpu`` or ``reference``, a CUDA tensor on ``cuda``/``triton``/``reference``),
a fake (meta) implementation, so ``torch.compile(model, fullgraph=True)`` and ``torch.export``
trace through them, and an autograd formula (``torch.library.register_autograd``).

How the configuration reaches the kernel: the :class:`~wcc.config.WCCConfig` fields travel as
schema arguments (``levels``, ``keep_ratio``, ``weight_bits``, ``act_bits`` and the ``backend``
name as a string), and the kernel rebuilds the config and asks the registry, at run time, which
backend runs the call. ``backend="auto"`` stays explainable (the registry's reasons) and the
``WCC_BACKEND`` override is still read in one place (``wcc.backends._registry``), at run time,
also inside a compiled graph or an exported program. The choice is made per call from the
input's device and dtype, so an exported program moved to another device picks that device's
backend.

Backward of ``wcc.conv``: ``wcc.conv_backward`` re-runs the forward through the selected
backend with autograd and returns its gradients (the backend's own backward: straight-through
inside the clip, learned-step alpha gradient, kept set a constant). It recomputes the forward
once per backward, the price of keeping the backends' saved state out of the operator's schema.
Eager calls (no graph to hold) take :func:`wcc_conv_eager`, the backend directly.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

import torch

from wcc.backends import select_backend, unsigned_act_quant_scratch
from wcc.backends import unsigned_act_quant_inference as _fused_unsigned
from wcc.config import WCCConfig
from wcc.quant import WeightCodes, unsigned_act_quant_grads
from wcc.quant import unsigned_act_quant as _reference_unsigned
from wcc.rules import keep_count

__all__ = ["wcc_conv", "wcc_conv_eager", "unsigned_act_quant", "quantized_input_conv"]


def _config(levels: int, keep_ratio: float, weight_bits: int | None, act_bits: int | None, backend: str) -> WCCConfig:
    return WCCConfig(levels=levels, keep_ratio=keep_ratio, weight_bits=weight_bits, act_bits=act_bits,
                     backend=backend)


def _weight_codes(weight: torch.Tensor, codes: torch.Tensor | None, weight_alpha: torch.Tensor | None,
                  weight_bits: int | None) -> WeightCodes | None:
    """The integer weight for backends with integer GEMMs, or None when it has no integer form
    (no codes given, a non-positive clip, a non-finite weight): those calls take the float GEMM."""
    if codes is None or weight_alpha is None or weight_bits is None or not 2 <= weight_bits <= 8:
        return None
    alpha = float(weight_alpha.detach().to(weight.dtype))
    if not alpha > 0 or not bool(torch.isfinite(weight).all()):
        return None
    return WeightCodes(codes=codes, alpha=alpha, levels=float(2 ** (weight_bits - 1) - 1))


def _memory_format(x: torch.Tensor) -> torch.memory_format:
    """The layout the op's output takes: channels-last for a channels-last input (so that a
    channels-last graph, where inductor runs the convolutions around the op, needs no transpose
    on either side of it), else contiguous. An input that is both (C == 1 or H == W == 1) counts
    as contiguous."""
    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


@torch.library.custom_op("wcc::conv", mutates_args=())
def _conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, act_alpha: torch.Tensor,
          weight_codes: torch.Tensor | None, weight_alpha: torch.Tensor | None, levels: int, keep_ratio: float,
          weight_bits: int | None, act_bits: int | None, backend: str) -> torch.Tensor:
    config = _config(levels, keep_ratio, weight_bits, act_bits, backend)
    codes = _weight_codes(weight, weight_codes, weight_alpha, weight_bits)
    with torch.no_grad():
        # Dense in the input's layout, as the fake says (the reference returns a cropped view
        # for odd sizes; backends may return either layout).
        y = select_backend(x, config).wcc_conv(x, weight, bias, act_alpha, config, codes)
        return y.contiguous(memory_format=_memory_format(x))


@_conv.register_fake
def _conv_fake(x, weight, bias, act_alpha, weight_codes, weight_alpha, levels, keep_ratio, weight_bits, act_bits,
               backend):
    return torch.empty((x.shape[0], weight.shape[0], x.shape[2], x.shape[3]), dtype=x.dtype, device=x.device,
                       memory_format=_memory_format(x))


@contextlib.contextmanager
def _autograd_inside_kernel() -> Iterator[None]:
    """Autograd back on inside an operator's kernel. A custom op's kernel runs below the autograd
    dispatch keys (they are in the thread's exclude set) and in no-grad mode; the backward
    kernel records the backend's own autograd graph, so it lifts both for its body."""
    exclude = torch._C._dispatch_tls_local_exclude_set().remove(torch._C.DispatchKey.AutogradFunctionality)
    with torch._C._ForceDispatchKeyGuard(torch._C._dispatch_tls_local_include_set(), exclude), torch.enable_grad():
        yield


@torch.library.custom_op("wcc::conv_backward", mutates_args=())
def _conv_backward(grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                   act_alpha: torch.Tensor, levels: int, keep_ratio: float, weight_bits: int | None,
                   act_bits: int | None, backend: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                                torch.Tensor]:
    """``(d x, d weight, d bias, d act_alpha)``; ``d bias`` is empty ``(0,)`` without a bias."""
    config = _config(levels, keep_ratio, weight_bits, act_bits, backend)
    with _autograd_inside_kernel():
        leaves = [t.detach().requires_grad_(True) for t in (x, weight, act_alpha)]
        b = bias.detach().requires_grad_(True) if bias is not None else None
        y = select_backend(x, config).wcc_conv(leaves[0], leaves[1], b, leaves[2], config)
        inputs = leaves + ([b] if b is not None else [])
        grads = torch.autograd.grad(y, inputs, grad, allow_unused=True)
    gx, gw, ga = (g if g is not None else torch.zeros_like(t) for g, t in zip(grads[:3], leaves))
    gb = grads[3] if b is not None and grads[3] is not None else x.new_zeros((0,) if b is None else b.shape)
    # Dense, d x in x's layout, as the fake says (a backend's gradients may come in any layout).
    return gx.contiguous(memory_format=_memory_format(x)), gw.contiguous(), gb.contiguous(), ga.contiguous()


@_conv_backward.register_fake
def _conv_backward_fake(grad, x, weight, bias, act_alpha, levels, keep_ratio, weight_bits, act_bits, backend):
    gb = bias.new_empty(bias.shape) if bias is not None else x.new_empty((0,))
    gx = torch.empty(x.shape, dtype=x.dtype, device=x.device, memory_format=_memory_format(x))
    return gx, weight.new_empty(weight.shape), gb, act_alpha.new_empty(act_alpha.shape)


def _conv_setup(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
    x, weight, bias, act_alpha, _, _, levels, keep_ratio, weight_bits, act_bits, backend = inputs
    ctx.save_for_backward(x, weight, bias, act_alpha)
    ctx.args = (levels, keep_ratio, weight_bits, act_bits, backend)
    ctx.has_bias = bias is not None


def _conv_grad(ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:
    x, weight, bias, act_alpha = ctx.saved_tensors
    gx, gw, gb, ga = torch.ops.wcc.conv_backward(grad, x, weight, bias if ctx.has_bias else None, act_alpha,
                                                 *ctx.args)
    return gx, gw, (gb if ctx.has_bias else None), ga, None, None, None, None, None, None, None


_conv.register_autograd(_conv_grad, setup_context=_conv_setup)


def wcc_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, act_alpha: torch.Tensor,
             config: WCCConfig, weight_codes: torch.Tensor | None = None,
             weight_alpha: torch.Tensor | None = None) -> torch.Tensor:
    """The WCC op through the operator ``torch.ops.wcc.conv`` (what compiled graphs and exported
    programs hold).

    Shapes: x ``(N, C_in, H, W)``, weight ``(C_out, C_in)`` (already quantized), bias ``(C_out,)``
    -> ``(N, C_out, H, W)``. ``weight_codes``: optionally the weight's int8 codes
    (:func:`wcc.quant.weight_code_tensor`) with its clip ``weight_alpha``, a hint for backends with
    integer GEMMs (inference only; ignored when the weight has no integer form).
    """
    keep_count(x.shape[-2], x.shape[-1], config)  # a `levels` that does not fit fails here, before tracing on
    return torch.ops.wcc.conv(x, weight, bias, act_alpha, weight_codes, weight_alpha, config.levels,
                              config.keep_ratio, config.weight_bits, config.act_bits, config.backend)


def wcc_conv_eager(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, act_alpha: torch.Tensor,
                   config: WCCConfig, weight_codes: WeightCodes | None = None) -> torch.Tensor:
    """The same op for eager calls: the backend the operator would pick, called directly.

    Eager PyTorch has no graph to keep, and the operator's boundary costs there: its dispatch and
    the integer weight's checks on every call (a layer caches validated
    :class:`~wcc.quant.WeightCodes`), its backward's second forward (a backend's own autograd keeps
    its saved state), and autocast, which does not reach inside an operator's kernel (the
    backends define the mixed-precision behaviour). docs/design.md §3.8.
    """
    return select_backend(x, config).wcc_conv(x, weight, bias, act_alpha, config, weight_codes)


@torch.library.custom_op("wcc::unsigned_act_quant", mutates_args=())
def _unsigned(x: torch.Tensor, alpha: torch.Tensor, bits: int) -> torch.Tensor:
    with torch.no_grad():
        out = _fused_unsigned(x, alpha, bits)  # the cpu backend's one-pass kernel, bit-identical
        return out if out is not None else _reference_unsigned(x, alpha, bits)


@_unsigned.register_fake
def _unsigned_fake(x, alpha, bits):
    return torch.empty_like(x)


def _unsigned_setup(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
    x, alpha, bits = inputs
    ctx.save_for_backward(x, alpha)
    ctx.bits = bits


def _unsigned_grad(ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:
    x, alpha = ctx.saved_tensors
    gx, ga = unsigned_act_quant_grads(grad, x, alpha, ctx.bits)
    return gx, ga.reshape(alpha.shape), None


_unsigned.register_autograd(_unsigned_grad, setup_context=_unsigned_setup)


def unsigned_act_quant(x: torch.Tensor, alpha: torch.Tensor, bits: int | None) -> torch.Tensor:
    """:func:`wcc.quant.unsigned_act_quant` through ``torch.ops.wcc.unsigned_act_quant``
    (same values and gradients; ``bits=None`` returns ``x``)."""
    if bits is None:
        return x
    return torch.ops.wcc.unsigned_act_quant(x, alpha.to(x.dtype) if alpha.dtype != x.dtype else alpha, bits)


def quantized_input_conv(x: torch.Tensor, alpha: torch.Tensor, bits: int | None,
                         conv: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """``conv(unsigned_act_quant(x, alpha, bits))``.

    In eager inference the quantized input goes to a reused buffer that only ``conv`` reads (a
    fresh multi-megabyte tensor per call costs a page fault per 4 KiB); when compiling or
    exporting, and whenever a gradient is needed, it is the operator's own output.
    """
    if bits is None:
        return conv(x)
    eager = not torch.compiler.is_compiling()
    if eager and not (torch.is_grad_enabled() and (x.requires_grad or alpha.requires_grad)):
        with unsigned_act_quant_scratch(x, alpha, bits) as xq:
            if xq is not None:
                return conv(xq)
    return conv(unsigned_act_quant(x, alpha, bits))
