"""Layers: :class:`WCCConv2d` (wavelet-compressed 1x1 conv) and :class:`QuantConv2d`."""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from wcc.config import QuantConfig, WCCConfig

# Layers call the operators (torch.ops.wcc.*, docs/design.md §3.4), never a backend: the operator
# picks the backend per call, and compiled graphs and exported programs hold the operator.
from wcc.ops import quantized_input_conv, wcc_conv, wcc_conv_eager
from wcc.quant import (
    ACT_ALPHA_INIT,
    WEIGHT_ALPHA_INIT,
    WeightCodes,
    weight_code_tensor,
    weight_quant,
    weight_quant_codes,
)
from wcc.rules import check_input, wcc_incompatibility

__all__ = ["WCCConv2d", "QuantConv2d", "check_input", "CLIP_HANDOVERS", "check_clip_handover"]

#: How a converted layer's activation clip starts from the quantized layer it replaces
#: (docs/design.md §3.5): ``"carry"`` copies it; ``"transform-gain"`` scales it by the gain of the
#: Haar levels the quantizer moves across (x 2^J from a pixel-domain QuantConv2d to a J-level WCC).
CLIP_HANDOVERS = ("carry", "transform-gain")


def check_clip_handover(value: str, name: str = "clip_handover") -> None:
    """ValueError unless ``value`` is one of :data:`CLIP_HANDOVERS` (``name``: what the caller calls it)."""
    if value not in CLIP_HANDOVERS:
        raise ValueError(f"{name} must be one of {CLIP_HANDOVERS}, got {value!r}")


def _check_dtype(x: torch.Tensor, weight: torch.Tensor, layer: str) -> None:
    if x.dtype != weight.dtype and not torch.is_autocast_enabled(x.device.type):
        raise TypeError(
            f"{layer}: input dtype {x.dtype} differs from weight dtype {weight.dtype}; "
            f"convert the model (e.g. model.to({x.dtype})) or run under torch.autocast"
        )


def _needs_grad(*tensors: torch.Tensor | None) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def _cached_weight_quant(layer: nn.Module, bits: int | None, compute: Callable[[], Any],
                         slot: str = "_wq_cache") -> Any:
    """``compute()`` (the layer's fake-quantized weight), reused while no gradient is needed.

    Inference would otherwise redo the standardise-and-quantize chain (about ten small tensor
    ops) on every call. The cache is keyed on the storage and version counter of ``weight`` and
    ``weight_alpha``, the bit width, dtype and device, so optimizer steps, ``load_state_dict``,
    in-place updates under ``torch.no_grad()`` and ``.to()`` all invalidate it. Writes through
    ``.data`` bypass version counters (as for any autograd-visible cache): avoid them, or call
    again with gradients enabled once to drop the cache. Whenever a gradient is needed the
    weight is recomputed and the cache dropped. ``slot`` names the attribute holding the cache
    (one per derived form of the weight).
    """
    w, alpha = layer.weight, layer.weight_alpha
    assert isinstance(w, torch.Tensor) and isinstance(alpha, torch.Tensor)
    if torch.compiler.is_compiling():
        return compute()  # in a graph: no Python-side cache (inductor folds frozen weights itself)
    if _needs_grad(w, alpha):
        setattr(layer, slot, None)
        return compute()
    try:
        key = (w.data_ptr(), w._version, alpha.data_ptr(), alpha._version, w.dtype, w.device, tuple(w.shape), bits)
    except RuntimeError:  # inference tensors carry no version counter: no safe key
        return compute()
    cached = getattr(layer, slot, None)
    if cached is not None and cached[0] == key:
        return cached[1]
    value = compute()
    setattr(layer, slot, (key, value))
    return value


class WCCConv2d(nn.Module):
    """Wavelet Compressed Convolution replacing a 1x1, stride-1, groups-1 ``nn.Conv2d``.

    ``weight`` keeps the conv's shape ``(C_out, C_in, 1, 1)`` so state dicts stay compatible.
    Learned clips: ``act_alpha`` (signed activation quantizer of the kept coefficients) and
    ``weight_alpha``. Input ``(N, C_in, H, W)``, any H x W, output ``(N, C_out, H, W)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        bias: bool = True,
        config: WCCConfig | None = None,
        act_alpha: float = ACT_ALPHA_INIT,
        weight_alpha: float = WEIGHT_ALPHA_INIT,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        fk: dict[str, Any] = {"device": device, "dtype": dtype}
        self.config = config if config is not None else WCCConfig()
        if not isinstance(self.config, WCCConfig):
            raise TypeError(f"config must be a WCCConfig, got {type(self.config).__name__}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, 1, 1, **fk))
        self.bias = nn.Parameter(torch.zeros(out_channels, **fk)) if bias else None
        self.act_alpha = nn.Parameter(torch.tensor(float(act_alpha), **fk))
        self.weight_alpha = nn.Parameter(torch.tensor(float(weight_alpha), **fk))
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)

    @classmethod
    def from_conv2d(cls, conv: "nn.Conv2d | WCCConv2d", config: WCCConfig | None = None,
                    clip_handover: str = "carry") -> "WCCConv2d":
        """Build from a 1x1, stride-1, groups-1 conv, or a QuantConv2d/WCCConv2d whose learned clips
        start the new layer's (``clip_handover``, one of :data:`CLIP_HANDOVERS`)."""
        config = config if config is not None else WCCConfig()
        if isinstance(conv, nn.Conv2d):
            reason = wcc_incompatibility(conv)
            if reason is not None:
                raise ValueError(reason)
        elif not isinstance(conv, WCCConv2d):
            raise TypeError(f"expected an nn.Conv2d, got {type(conv).__name__}")
        act_alpha, weight_alpha = _clips_of(conv, config.levels, clip_handover)
        layer = cls(conv.in_channels, conv.out_channels, conv.bias is not None, config, act_alpha, weight_alpha,
                    device=conv.weight.device, dtype=conv.weight.dtype)
        _copy_params(layer, conv)
        return layer

    def quantized_weight(self) -> torch.Tensor:
        """The fake-quantized weight as a ``(C_out, C_in)`` matrix (cached while no gradient is needed)."""
        bits = self.config.weight_bits
        return _cached_weight_quant(self, bits, lambda: weight_quant(self.weight, self.weight_alpha, bits).flatten(1))

    def weight_codes(self) -> WeightCodes | None:
        """The quantized weight's integer codes as ``(C_out, C_in)`` int8 (see
        :func:`wcc.quant.weight_quant_codes`), cached like :meth:`quantized_weight`; None while a
        gradient is needed or when the weight is not quantized to <= 8 bits."""
        bits = self.config.weight_bits
        if bits is None or bits > 8 or _needs_grad(self.weight, self.weight_alpha):
            return None

        # The statistics are over the whole tensor, so quantizing the (C_out, C_in) view is the same.
        return _cached_weight_quant(self, bits,
                                    lambda: weight_quant_codes(self.weight.flatten(1), self.weight_alpha, bits),
                                    slot="_wcodes_cache")

    def _code_tensor(self) -> torch.Tensor | None:
        """The weight's int8 codes ``(C_out, C_in)`` for the operator in a graph (tensor ops only),
        or None when there are none to give (see :meth:`weight_codes`)."""
        bits = self.config.weight_bits
        if bits is None or bits > 8 or _needs_grad(self.weight, self.weight_alpha):
            return None
        return weight_code_tensor(self.weight.flatten(1), self.weight_alpha, bits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.in_channels, "WCCConv2d")
        _check_dtype(x, self.weight, "WCCConv2d")
        # Integer codes let the cpu and cuda backends run their GEMM in int8 (quantized inference
        # only; backends without integer GEMMs ignore them, and so does the operator when the
        # weight has no integer form).
        int_gemm = x.device.type in ("cpu", "cuda") and (self.config.act_bits or 99) <= 8
        if torch.compiler.is_compiling():  # a graph holds the operator (docs/design.md §3.8)
            codes = self._code_tensor() if int_gemm else None
            return wcc_conv(x, self.quantized_weight(), self.bias, self.act_alpha, self.config, codes,
                            self.weight_alpha if codes is not None else None)
        return wcc_conv_eager(x, self.quantized_weight(), self.bias, self.act_alpha, self.config,
                              self.weight_codes() if int_gemm else None)

    def extra_repr(self) -> str:
        c = self.config
        return (f"{self.in_channels}, {self.out_channels}, levels={c.levels}, keep_ratio={c.keep_ratio}, "
                f"bits={c.label}, bias={self.bias is not None}, backend={c.backend!r}")


def _copy_params(layer: nn.Module, conv: nn.Module) -> None:
    """Copy ``conv``'s weight (same shape) and bias, if any, into the freshly built ``layer``."""
    weight, bias = conv.weight, conv.bias
    assert isinstance(weight, torch.Tensor) and (bias is None or isinstance(bias, torch.Tensor))
    with torch.no_grad():
        layer.weight.copy_(weight)  # type: ignore[operator]
        if bias is not None:
            layer.bias.copy_(bias)  # type: ignore[operator]


def _wavelet_levels(conv: nn.Module) -> int:
    """Haar levels between a layer's input and its activation quantizer (0: it quantizes pixels)."""
    return conv.config.levels if isinstance(conv, WCCConv2d) else 0


def _clips_of(conv: nn.Module, levels: int = 0, clip_handover: str = "carry") -> tuple[float, float]:
    """(activation clip, weight clip) a layer quantizing after ``levels`` Haar levels starts from
    when it replaces ``conv``: ``conv``'s learned clips if it is quantized, else the initial values.

    With ``"transform-gain"`` the activation clip is scaled by 2^(levels - conv's levels). A J-level
    orthonormal Haar turns a constant region of value v into an LL coefficient of 2^J v
    (docs/design.md §3.1), so a clip learned on pixels cuts the LL band of a WCC layer that starts
    from it; a long fine-tune can learn the clip again, a short one cannot (docs/design.md §4.2).
    """
    check_clip_handover(clip_handover)
    if not isinstance(conv, (QuantConv2d, WCCConv2d)):
        return ACT_ALPHA_INIT, WEIGHT_ALPHA_INIT
    act_alpha = conv.act_alpha.item()
    if clip_handover == "transform-gain":
        act_alpha *= 2.0 ** (levels - _wavelet_levels(conv))
    return act_alpha, conv.weight_alpha.item()


class QuantConv2d(nn.Conv2d):
    """A conv with quantized input (unsigned, learned clip) and standardised quantized weights.

    Accepts every ``nn.Conv2d`` setting (kernel, stride, padding, dilation, groups). It *is* an
    ``nn.Conv2d`` subclass, so parameter names (``weight``, ``bias``) match the source layer.
    """

    def __init__(self, *args, weight_bits: int | None = 8, act_bits: int | None = 8,
                 act_alpha: float = ACT_ALPHA_INIT, weight_alpha: float = WEIGHT_ALPHA_INIT, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        QuantConfig(weight_bits, act_bits)  # validates
        self.weight_bits = weight_bits
        self.act_bits = act_bits
        fk: dict[str, Any] = {"device": self.weight.device, "dtype": self.weight.dtype}
        self.act_alpha = nn.Parameter(torch.tensor(float(act_alpha), **fk))
        self.weight_alpha = nn.Parameter(torch.tensor(float(weight_alpha), **fk))

    @property
    def quant_config(self) -> QuantConfig:
        return QuantConfig(self.weight_bits, self.act_bits)

    @classmethod
    def from_conv2d(cls, conv: "nn.Conv2d | WCCConv2d", weight_bits: int | None = 8,
                    act_bits: int | None = 8, clip_handover: str = "carry") -> "QuantConv2d":
        """Build from any ``nn.Conv2d``, a QuantConv2d or a WCCConv2d (a 1x1 conv: WCC -> plain
        quantization); the quantized layers' learned clips start the new layer's (``clip_handover``,
        one of :data:`CLIP_HANDOVERS`)."""
        act_alpha, weight_alpha = _clips_of(conv, 0, clip_handover)
        if isinstance(conv, WCCConv2d):
            geometry: dict[str, Any] = {"kernel_size": 1}
        elif isinstance(conv, nn.Conv2d):
            geometry = {"kernel_size": conv.kernel_size, "stride": conv.stride, "padding": conv.padding,
                        "dilation": conv.dilation, "groups": conv.groups, "padding_mode": conv.padding_mode}
        else:
            raise TypeError(f"expected an nn.Conv2d, got {type(conv).__name__}")
        layer = cls(conv.in_channels, conv.out_channels, **geometry, bias=conv.bias is not None,
                    weight_bits=weight_bits, act_bits=act_bits, act_alpha=act_alpha, weight_alpha=weight_alpha,
                    device=conv.weight.device, dtype=conv.weight.dtype)
        _copy_params(layer, conv)
        return layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.in_channels, "QuantConv2d")
        _check_dtype(x, self.weight, "QuantConv2d")
        bits = self.weight_bits
        wq = _cached_weight_quant(self, bits, lambda: weight_quant(self.weight, self.weight_alpha, bits))
        # The activation quantizer is the operator torch.ops.wcc.unsigned_act_quant (one fused
        # pass on the cpu backend, bit-identical to the reference).
        return quantized_input_conv(x, self.act_alpha, self.act_bits, lambda xq: self._conv_forward(xq, wq, self.bias))

    def extra_repr(self) -> str:
        return super().extra_repr() + f", bits={self.quant_config.label}"
