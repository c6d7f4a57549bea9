"""Cost accounting: MACs, BOPs, equivalent bits, activation bytes (docs/design.md §3.7).

Two BOP conventions:

* ``"actual"``: each layer at the precision it really runs at (FP layers count 32 x 32 bits,
  a WCC layer's GEMM counts ``C_out * C_in * k`` MACs for its k kept positions).
* ``"paper"``: the convention of the published Cityscapes rows. Every MAC of the model counts
  at the row's precision (first and last layers included, although they stay FP), the MACs of
  every pointwise (1x1 stride-1) conv scale with the row's ``keep_ratio`` - the kept-FP last
  classifier 1x1 included, as the published rows' fitted 95% scaling fraction requires - and
  each WCC layer adds the rate-independent cost of its two Haar transforms.

The transform cost is 4 additions per coefficient per level (each output of a 2x2 Haar
butterfly is a 4-term sum of +-1 multiples; the 1/2 is a shift), over the padded map, for the
forward transform of the input (C_in channels) and the inverse transform of the output (C_out
channels). Its filter weights are +-1, so it counts at ``act_bits x 1`` bits. On DeepLabV3+ at
1024x2048 that gives about 19 B at 8 bits, the rate-independent overhead fitted from the
published rows (docs/design.md §3.7).
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from typing import Literal

import torch
from torch import nn

from wcc.config import WCCConfig
from wcc.convert import is_wcc_candidate
from wcc.haar import padded_size
from wcc.layers import QuantConv2d, WCCConv2d
from wcc.rules import keep_count

__all__ = [
    "LayerCost",
    "layer_costs",
    "total_macs",
    "bops",
    "equivalent_bits",
    "activation_bytes",
    "transform_macs",
]

FP_BITS = 32


@dataclass(frozen=True)
class LayerCost:
    """Cost of one conv layer for one forward pass at the given input size (whole batch)."""

    name: str
    kind: Literal["wcc", "quant", "fp"]
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    dense_macs: int  # the layer as a plain conv
    macs: int  # what it really computes (WCC: the kept columns only)
    transform_macs: int  # Haar forward + inverse (WCC only)
    weight_bits: int | None
    act_bits: int | None
    keep_ratio: float  # 1.0 for non-WCC layers
    pointwise: bool = False  # 1x1, stride 1, groups 1: a layer WCC could replace

    def to_dict(self) -> dict:
        return asdict(self)


def transform_macs(channels_in: int, channels_out: int, height: int, width: int, levels: int) -> int:
    """MAC-equivalents of one WCC layer's Haar transforms (forward on input, inverse on output)."""
    hp, wp = padded_size(height, levels), padded_size(width, levels)
    per_channel = sum(4 * (hp * wp >> (2 * j)) for j in range(levels))
    return (channels_in + channels_out) * per_channel


def _conv_macs(m: nn.Conv2d, out_shape: torch.Size) -> int:
    kh, kw = m.kernel_size
    return int(out_shape.numel()) * (m.in_channels // m.groups) * kh * kw


def _run_shapes(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, tuple[tuple, tuple]]:
    """Input/output shape of every conv, from one forward on the meta device (no real compute)."""
    shapes: dict[str, tuple[tuple, tuple]] = {}
    handles = []
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, WCCConv2d)):
            handles.append(m.register_forward_hook(
                lambda mod, inp, out, name=name: shapes.__setitem__(name, (tuple(inp[0].shape), tuple(out.shape)))
            ))
    try:
        with torch.no_grad():
            model(torch.zeros(input_shape, device=next(model.parameters()).device))
    finally:
        for h in handles:
            h.remove()
    return shapes


def layer_costs(model: nn.Module, input_shape: tuple[int, ...]) -> list[LayerCost]:
    """Per-conv costs of ``model`` for an input of ``input_shape`` (e.g. ``(1, 3, 1024, 2048)``).

    The forward runs on a copy of the model on the ``meta`` device, so even paper-size inputs
    cost no compute or memory.
    """
    meta = copy.deepcopy(model).to("meta").eval()
    shapes = _run_shapes(meta, tuple(input_shape))
    out: list[LayerCost] = []
    for name, m in model.named_modules():
        if name not in shapes:
            continue
        in_s, out_s = shapes[name]
        if isinstance(m, WCCConv2d):
            c = m.config
            n, _, h, w = in_s
            dense = n * m.out_channels * m.in_channels * h * w
            k = keep_count(h, w, c)
            out.append(LayerCost(name, "wcc", in_s, out_s, dense, n * m.out_channels * m.in_channels * k,
                                 n * transform_macs(m.in_channels, m.out_channels, h, w, c.levels),
                                 c.weight_bits, c.act_bits, c.keep_ratio, True))
        else:
            macs = _conv_macs(m, torch.Size(out_s))
            pw = is_wcc_candidate(m)
            if isinstance(m, QuantConv2d):
                out.append(LayerCost(name, "quant", in_s, out_s, macs, macs, 0, m.weight_bits, m.act_bits, 1.0, pw))
            else:
                out.append(LayerCost(name, "fp", in_s, out_s, macs, macs, 0, None, None, 1.0, pw))
    return out


def total_macs(costs: list[LayerCost], dense: bool = True) -> int:
    """Sum of MACs; ``dense=True`` counts every layer as the plain conv it replaces."""
    return sum(c.dense_macs if dense else c.macs for c in costs)


def _bits(b: int | None) -> int:
    return FP_BITS if b is None else b


def bops(
    costs: list[LayerCost],
    convention: Literal["actual", "paper"] = "actual",
    precision: tuple[int | None, int | None] | None = None,
) -> float:
    """Bit operations, in billions.

    Args:
        convention: ``"actual"`` or ``"paper"`` (see module docstring).
        precision: ``(weight_bits, act_bits)`` of the table row for the paper convention; by
            default the bits of the first quantized layer (FP32 when there is none).
    """
    if convention == "actual":
        actual = sum(c.macs * _bits(c.weight_bits) * _bits(c.act_bits) + c.transform_macs * _bits(c.act_bits)
                     for c in costs)
        return actual / 1e9
    if convention != "paper":
        raise ValueError(f"convention must be 'actual' or 'paper', got {convention!r}")
    if precision is None:
        quantized = [c for c in costs if c.kind != "fp"]
        precision = (quantized[0].weight_bits, quantized[0].act_bits) if quantized else (None, None)
    wcc_layers = [c for c in costs if c.kind == "wcc"]
    row_keep = wcc_layers[0].keep_ratio if wcc_layers else 1.0
    w_bits, a_bits = _bits(precision[0]), _bits(precision[1])
    total = 0.0
    for c in costs:
        scale = c.keep_ratio if c.kind == "wcc" else (row_keep if c.pointwise else 1.0)
        total += c.dense_macs * scale * w_bits * a_bits + c.transform_macs * a_bits
    return total / 1e9


def equivalent_bits(keep_ratio: float, act_bits: int, channels: int) -> float:
    """Bits per activation element: kept fraction x bits, plus one shared bit-map per image."""
    return keep_ratio * act_bits + 1.0 / channels


def activation_bytes(shape: tuple[int, int, int, int], config: WCCConfig) -> tuple[float, float]:
    """(compressed, dense) bytes of a ``(N, C, H, W)`` activation; dense at ``act_bits`` too.

    Compressed: the k kept coefficients per channel at ``act_bits`` plus a bit-map of the
    padded positions per image.
    """
    n, c, h, w = shape
    bits = FP_BITS if config.act_bits is None else config.act_bits
    hp, wp = padded_size(h, config.levels), padded_size(w, config.levels)
    k = keep_count(h, w, config)
    compressed = n * (c * k * bits + hp * wp) / 8
    dense = n * c * h * w * bits / 8
    return compressed, dense
