"""MobileNetV2 with torchvision-compatible parameter names, and loading of ImageNet weights.

The module tree mirrors torchvision's ``MobileNetV2`` exactly (``features.0.0.weight``,
``features.1.conv.0.0.weight``, ..., ``features.18.0.weight``, ``classifier.1.weight``), so a
state-dict file saved from torchvision (e.g. ``mobilenet_v2-b0353104.pth``) loads with
:meth:`MobileNetV2.load_pretrained` without torchvision installed.

Two extras over the classification network, both needed by the dense-prediction models:

* ``output_stride``: once the running stride reaches it, later stages keep their resolution
  and dilate their depthwise convs instead (the DeepLab backbone, output stride 8 or 16).
* ``padding="vainf"``: the padding scheme of VainF/DeepLabV3Plus-Pytorch, the code the paper's
  DeepLabV3+ numbers come from. There the stem conv has no padding, and every inverted
  residual zero-pads its *input* (before the 1x1 expansion) instead of padding inside the
  depthwise conv. Same parameters, slightly different activations and sizes (a 1024x2048 input
  gives 511x1023 after the stem), and the expansion 1x1 convs run on the padded map - which is
  what a WCC layer there sees. ``padding="torchvision"`` (default) is the usual network.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "MobileNetV2",
    "InvertedResidual",
    "ConvBNReLU",
    "mobilenet_v2",
    "INVERTED_RESIDUAL_SETTING",
    "load_state_dict_file",
    "make_divisible",
]

Padding = Literal["torchvision", "vainf"]

# t (expansion), c (output channels), n (repeats), s (stride of the first repeat).
INVERTED_RESIDUAL_SETTING: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round a channel count to a multiple of ``divisor``, never more than 10% below ``value``.

    Same rule as torchvision and the TF reference, so widths match published checkpoints.
    """
    min_value = divisor if min_value is None else min_value
    new = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new < 0.9 * value:
        new += divisor
    return new


class ConvBNReLU(nn.Sequential):
    """Conv -> BatchNorm -> ReLU6 (children ``0``, ``1``, ``2`` as in torchvision)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 dilation: int = 1, groups: int = 1, padding: int | None = None) -> None:
        padding = (kernel_size - 1) // 2 * dilation if padding is None else padding
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation=dilation,
                      groups=groups, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU6(inplace=True),
        )


class InvertedResidual(nn.Module):
    """Expand (1x1) -> depthwise 3x3 -> project (1x1), residual when shapes allow.

    Input ``(N, inp, H, W)``, output ``(N, oup, ceil(H / stride), ceil(W / stride))``.
    ``padding="vainf"`` pads the block input by ``dilation`` on every side instead of padding
    inside the depthwise conv (see the module docstring).
    """

    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int, dilation: int = 1,
                 padding: Padding = "torchvision") -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"InvertedResidual stride must be 1 or 2, got {stride}")
        _check_padding(padding)
        self.stride = stride
        self.use_res_connect = stride == 1 and inp == oup
        # Output of a 3x3 kernel with dilation d needs d pixels of context on each side.
        self.input_padding = dilation if padding == "vainf" else 0
        dw_padding = 0 if padding == "vainf" else dilation
        hidden = int(round(inp * expand_ratio))
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNReLU(inp, hidden, kernel_size=1))
        layers += [
            ConvBNReLU(hidden, hidden, stride=stride, dilation=dilation, groups=hidden, padding=dw_padding),
            nn.Conv2d(hidden, oup, 1, 1, 0, bias=False),
            nn.BatchNorm2d(oup),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.input_padding
        out = self.conv(F.pad(x, (p, p, p, p)) if p else x)
        return x + out if self.use_res_connect else out


def _check_padding(padding: str) -> None:
    if padding not in ("torchvision", "vainf"):
        raise ValueError(f"padding must be 'torchvision' or 'vainf', got {padding!r}")


class MobileNetV2(nn.Module):
    """MobileNetV2 (Sandler et al. 2018) with torchvision's parameter names.

    Args:
        num_classes: classifier outputs (1000 for ImageNet).
        width_mult: channel multiplier (channels rounded with :func:`make_divisible`).
        output_stride: stride at which downsampling stops and dilation takes over (8, 16 or 32;
            32 is the plain classification network).
        inverted_residual_setting: rows ``(t, c, n, s)``; default :data:`INVERTED_RESIDUAL_SETTING`.
        round_nearest: channel rounding multiple.
        dropout: dropout before the final linear layer.
        padding: ``"torchvision"`` or ``"vainf"`` (module docstring).

    Input ``(N, 3, H, W)``; ``forward`` returns logits ``(N, num_classes)``. ``features`` alone
    maps to ``(N, last_channel, H / output_stride, W / output_stride)`` (rounded up).
    """

    def __init__(
        self,
        num_classes: int = 1000,
        width_mult: float = 1.0,
        output_stride: int = 32,
        inverted_residual_setting: Sequence[Sequence[int]] | None = None,
        round_nearest: int = 8,
        dropout: float = 0.2,
        padding: Padding = "torchvision",
    ) -> None:
        super().__init__()
        _check_padding(padding)
        if width_mult <= 0:
            raise ValueError(f"width_mult must be > 0, got {width_mult}")
        if output_stride not in (8, 16, 32):
            raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")
        setting = INVERTED_RESIDUAL_SETTING if inverted_residual_setting is None else inverted_residual_setting
        if not setting or any(len(row) != 4 for row in setting):
            raise ValueError(f"inverted_residual_setting must be non-empty rows of (t, c, n, s), got {setting}")
        self.output_stride = output_stride
        self.padding = padding
        input_channel = make_divisible(32 * width_mult, round_nearest)
        self.last_channel = make_divisible(1280 * max(1.0, width_mult), round_nearest)
        # VainF's stem has no padding (its blocks pad their own inputs, the stem does not).
        stem_padding = 0 if padding == "vainf" else 1
        features: list[nn.Module] = [ConvBNReLU(3, input_channel, stride=2, padding=stem_padding)]
        self.stage_channels: list[int] = [input_channel]  # output channels of each features[i]
        current_stride, dilation = 2, 1
        for t, c, n, s in setting:
            out_channel = make_divisible(c * width_mult, round_nearest)
            previous_dilation = dilation
            if current_stride >= output_stride:
                # Keep the resolution; the first block still uses the old dilation, the
                # following ones the new one (the DeepLab "multi-grid free" scheme of VainF).
                stride, dilation = 1, dilation * s
            else:
                stride, current_stride = s, current_stride * s
            for i in range(n):
                features.append(InvertedResidual(
                    input_channel, out_channel, stride if i == 0 else 1, t,
                    dilation=previous_dilation if i == 0 else dilation, padding=padding))
                self.stage_channels.append(out_channel)
                input_channel = out_channel
        features.append(ConvBNReLU(input_channel, self.last_channel, kernel_size=1))
        self.stage_channels.append(self.last_channel)
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(self.last_channel, num_classes))
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.classifier(x)

    def load_pretrained(self, path: str | os.PathLike, strict: bool = True) -> "MobileNetV2":
        """Load a torchvision-layout state-dict file (e.g. ImageNet weights) from a local path.

        Raises FileNotFoundError for a missing file and a ValueError naming the missing,
        unexpected or mis-shaped keys when the file does not fit this network (with
        ``strict=False`` only shape mismatches and a file sharing no key are errors).
        """
        load_into(self, load_state_dict_file(path), strict=strict, source=str(path))
        return self


def _init_weights(model: nn.Module) -> None:
    """torchvision's initialisation (Kaiming fan-out convs, unit BN, small linear)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state dict saved with ``torch.save`` (also unwraps ``{"state_dict": ...}`` / ``{"model": ...}``)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"pretrained weights file not found: {path!r}; download e.g. torchvision's "
            f"mobilenet_v2-b0353104.pth and pass its local path")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unreadable or not a tensor-only pickle
        raise ValueError(f"cannot read a state dict from {path!r}: {exc}") from exc
    for key in ("state_dict", "model", "model_state"):
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path!r} does not hold a state dict (a mapping of names to tensors)")
    # Checkpoints saved from DataParallel prefix every key with "module.".
    return {k[7:] if k.startswith("module.") else k: v for k, v in obj.items()}


def load_into(model: nn.Module, state: Mapping[str, torch.Tensor], strict: bool = True,
              source: str = "state dict") -> None:
    """``model.load_state_dict(state)`` with a readable error listing what does not fit."""
    own = model.state_dict()
    # Files saved before PyTorch 0.4.1 (torchvision's ImageNet MobileNetV2 among them) have no
    # BatchNorm ``num_batches_tracked``; BatchNorm fills it in itself when it is absent.
    missing = sorted(k for k in set(own) - set(state) if not k.endswith("num_batches_tracked"))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                    for k in set(own) & set(state) if state[k].shape != own[k].shape)
    problems = []
    if shapes:
        problems.append(f"{len(shapes)} shape mismatch(es): {_head(shapes)}")
    if strict and missing:
        problems.append(f"{len(missing)} missing key(s): {_head(missing)}")
    if strict and unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s): {_head(unexpected)}")
    if not set(own) & set(state):
        problems.append(f"no key in common (model keys look like {next(iter(own))!r}, "
                        f"file keys like {next(iter(state), None)!r})")
    if problems:
        # The first key, in the model's own order, where file and model part ways: usually the
        # one place to look (a renamed module, another num_classes, another width).
        bad = {k for k in set(own) & set(state) if state[k].shape != own[k].shape}
        if strict:
            bad |= set(missing) | set(unexpected)
        first = next((k for k in [*own, *state] if k in bad), None)
        lead = f"first mismatching key {first!r}; " if first is not None else ""
        raise ValueError(f"{source} does not fit {type(model).__name__}: {lead}" + "; ".join(problems)
                         + ". Check the architecture settings (width_mult, num_classes) or pass strict=False.")
    model.load_state_dict(dict(state), strict=strict)


def _head(items: list[str], n: int = 5) -> str:
    return ", ".join(items[:n]) + (f", ... ({len(items) - n} more)" if len(items) > n else "")


def mobilenet_v2(
    width_mult: float = 1.0,
    num_classes: int = 1000,
    pretrained: str | os.PathLike | None = None,
    **kwargs,
) -> MobileNetV2:
    """Build a :class:`MobileNetV2`; ``pretrained`` is a local state-dict path (torchvision layout).

    Extra keyword arguments go to :class:`MobileNetV2` (``output_stride``, ``padding``, ...).
    """
    model = MobileNetV2(num_classes=num_classes, width_mult=width_mult, **kwargs)
    if pretrained is not None:
        model.load_pretrained(pretrained)
    return model
