"""The method's shared rules, one home each (docs/design.md §3).

Layers, backends, model conversion and cost accounting all need the same three answers, and
each is written only here:

* :func:`keep_count` - how many wavelet positions a WCC op keeps;
* :func:`wcc_incompatibility` - which convolutions WCC replaces
  exactly (pointwise: 1x1, stride 1, groups 1, no padding;
  :func:`wcc.convert.is_wcc_candidate` applies it to modules);
* :func:`check_input` - what input a WCC or quantized layer (and any backend) accepts, and
  :func:`check_op_args` - the arguments of a backend's WCC op.

It imports only :mod:`wcc.config` and :mod:`wcc.haar`, so it sits below both
:mod:`wcc.layers` and :mod:`wcc.backends` (backends never import layers).
"""

from __future__ import annotations

import torch
from torch import nn

from wcc.config import WCCConfig
from wcc.haar import check_levels, padded_size

__all__ = ["keep_count", "wcc_incompatibility", "check_input", "check_op_args"]


def keep_count(height: int, width: int, config: WCCConfig) -> int:
    """k = floor(H' * W' * keep_ratio) over the padded size (at least one position).

    ``H'``, ``W'`` are ``height``, ``width`` padded to a multiple of ``2**config.levels``.
    Raises ``ValueError`` when ``config.levels`` does not fit the size
    (:func:`wcc.haar.check_levels`: ``2**levels <= 8 * max(H, W)``).
    """
    check_levels(height, width, config.levels)
    hp, wp = padded_size(height, config.levels), padded_size(width, config.levels)
    return max(1, int(hp * wp * config.keep_ratio))


def wcc_incompatibility(conv: nn.Conv2d) -> str | None:
    """Why WCC cannot replace ``conv`` exactly, or None when it can.

    WCC is exact only for pointwise convs: 1x1, stride 1, no padding, groups 1 (dilation has
    no effect on a 1x1 kernel).
    """
    ks = tuple(conv.kernel_size)
    if ks != (1, 1):
        return f"WCCConv2d needs a 1x1 conv: kernel_size={ks}"
    if tuple(conv.stride) != (1, 1):
        return f"WCCConv2d needs stride 1: stride={tuple(conv.stride)}"
    if conv.groups != 1:
        return f"WCCConv2d needs groups=1: groups={conv.groups}"
    pad = conv.padding
    if isinstance(pad, str):
        if pad not in ("valid", "same"):
            return f"WCCConv2d needs no padding: padding={pad!r}"
    elif tuple(pad) != (0, 0):
        return f"WCCConv2d needs padding 0: padding={tuple(pad)}"
    return None


def check_input(x: torch.Tensor, in_channels: int, layer: str) -> None:
    """Reject a bad ``(N, C, H, W)`` input with a message instead of a crash deep inside torch.

    ``layer`` names the caller in the message (a layer class or a backend).
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{layer} expects a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"{layer} expects a 4-D input (N, C, H, W), got shape {tuple(x.shape)}")
    if x.shape[1] != in_channels:
        raise ValueError(
            f"{layer} expects {in_channels} input channels, got {x.shape[1]} (input shape {tuple(x.shape)})"
        )
    if not x.is_floating_point():
        raise TypeError(f"{layer} expects a floating-point input, got {x.dtype}")
    if x.shape[0] == 0 or x.shape[2] == 0 or x.shape[3] == 0:
        raise ValueError(f"{layer} got an empty input of shape {tuple(x.shape)}")


def check_op_args(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, act_alpha: torch.Tensor,
                  backend: str) -> None:
    """The checks every backend's WCC op makes before any work: weight ``(C_out, C_in)``, input
    ``(N, C_in, H, W)`` (:func:`check_input`), bias ``(C_out,)`` or None, a scalar ``act_alpha``.
    ``backend`` names the backend in the messages."""
    if weight.dim() != 2:
        raise ValueError(f"the {backend} backend expects a (C_out, C_in) weight, got shape {tuple(weight.shape)}")
    check_input(x, weight.shape[1], f"WCC {backend} backend")
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise ValueError(f"bias must have shape ({weight.shape[0]},), got {tuple(bias.shape)}")
    if act_alpha.numel() != 1:
        raise ValueError(f"act_alpha must be a scalar, got shape {tuple(act_alpha.shape)}")
