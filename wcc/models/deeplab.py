"""DeepLabV3+ with a MobileNetV2 backbone, as in VainF/DeepLabV3Plus-Pytorch (the paper's model).

Architecture of VainF's ``deeplabv3plus_mobilenet`` trained with ``--separable_conv``:

* backbone: MobileNetV2 ``features[0:4]`` (low level, 24 channels at stride 4) and
  ``features[4:18]`` (high level, 320 channels at the output stride; the 1280-channel 1x1 conv
  ``features[18]`` and the ImageNet classifier are dropped). At output stride 16 the last two
  stages are dilated instead of strided (rates 1, 2, 2, 2).
* ASPP, 256 channels: a 1x1 branch, three 3x3 branches with rates 6/12/18 (12/24/36 at output
  stride 8), an image-pooling branch (global average -> 1x1 -> BN -> ReLU -> upsample), then a
  1x1 projection of the 1280 concatenated channels and dropout 0.1.
* decoder: 1x1 projection of the low-level features to 48 channels, concatenated with the
  upsampled ASPP output (304 channels), a 3x3 conv to 256, then the 1x1 classifier; the logits
  are upsampled bilinearly to the input size.
* ``separable=True``: every 3x3 conv of the head (the ASPP rate branches and the decoder 3x3) is
  a depthwise 3x3 followed by a pointwise 1x1 (VainF's ``AtrousSeparableConvolution``); the
  1x1 convs stay as they are.

Module names are VainF's, so checkpoint files go both ways (docs/design.md §4.1):
``backbone.low_level_features.0.0.weight`` ... ``.3.*``, ``backbone.high_level_features.4.*`` ...
``.17.*`` (VainF slices ``features[4:-1]`` of an ``nn.Sequential``, which keeps the original
indices), ``classifier.aspp.convs.1.0.body.0.weight``, ``classifier.classifier.3.weight``, ...
:meth:`DeepLabV3Plus.load_checkpoint` reads VainF's ``best_deeplabv3plus_mobilenet_*.pth``
(``{"model_state": ...}``) or a bare state dict, strictly. The backbone uses VainF's padding by
default (``padding="vainf"``, see :mod:`wcc.models.mobilenetv2`).

Census with the paper's setting (:func:`paper_keep_fp`: the stem conv and the last classifier
conv kept FP, every other 1x1 conv WCC, everything else quantized): 41 WCCConv2d, 21
QuantConv2d, 2 Conv2d. Dense MACs at 1x3x1024x2048, output stride 16, separable head, from
:mod:`wcc.accounting`: 36.32 G with VainF's padding (35.83 G with ``padding="torchvision"``);
the paper's FP32 BOPs, 36,377 B = MACs x 32 x 32, imply 35.52 G.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from wcc.models.mobilenetv2 import MobileNetV2, Padding, load_into, load_state_dict_file

__all__ = [
    "DeepLabV3Plus",
    "DeepLabHeadV3Plus",
    "ASPP",
    "AtrousSeparableConv",
    "MobileNetV2Backbone",
    "deeplabv3plus_mobilenetv2",
    "backbone_state_from_mobilenetv2",
]

ASPP_CHANNELS = 256
LOW_LEVEL_PROJ_CHANNELS = 48
# features[:LOW_LEVEL_END] is the low-level branch (stride 4, 24 channels at width 1.0).
LOW_LEVEL_END = 4


class AtrousSeparableConv(nn.Module):
    """Depthwise kxk (dilated) conv followed by a pointwise 1x1 conv, in ``body.0`` / ``body.1``.

    ``(N, C_in, H, W) -> (N, C_out, H', W')`` with ``H', W'`` as for the dense kxk conv it replaces.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 padding: int = 1, dilation: int = 1, bias: bool = False) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, in_channels, kernel_size, stride, padding, dilation, groups=in_channels, bias=bias),
            nn.Conv2d(in_channels, out_channels, 1, bias=bias),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def _conv3x3(in_channels: int, out_channels: int, dilation: int, separable: bool) -> nn.Module:
    if separable:
        return AtrousSeparableConv(in_channels, out_channels, 3, padding=dilation, dilation=dilation)
    return nn.Conv2d(in_channels, out_channels, 3, padding=dilation, dilation=dilation, bias=False)


def _conv_bn_relu(conv: nn.Module, channels: int) -> nn.Sequential:
    return nn.Sequential(conv, nn.BatchNorm2d(channels), nn.ReLU(inplace=True))


class _ASPPPooling(nn.Sequential):
    """Image-level branch: global average pool -> 1x1 -> BN -> ReLU, upsampled back to H x W."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(nn.AdaptiveAvgPool2d(1), nn.Conv2d(in_channels, out_channels, 1, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        return F.interpolate(super().forward(x), size=size, mode="bilinear", align_corners=False)


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: ``(N, C_in, H, W) -> (N, 256, H, W)``."""

    def __init__(self, in_channels: int, rates: Sequence[int], separable: bool = True,
                 out_channels: int = ASPP_CHANNELS) -> None:
        super().__init__()
        if len(rates) != 3:
            raise ValueError(f"ASPP takes three atrous rates, got {list(rates)}")
        branches: list[nn.Module] = [_conv_bn_relu(nn.Conv2d(in_channels, out_channels, 1, bias=False), out_channels)]
        branches += [_conv_bn_relu(_conv3x3(in_channels, out_channels, r, separable), out_channels) for r in rates]
        branches.append(_ASPPPooling(in_channels, out_channels))
        self.convs = nn.ModuleList(branches)
        self.project = nn.Sequential(
            nn.Conv2d(len(branches) * out_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True), nn.Dropout(0.1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(torch.cat([branch(x) for branch in self.convs], dim=1))


class DeepLabHeadV3Plus(nn.Module):
    """Decoder: ``(low (N, C_low, H4, W4), high (N, C_high, H', W')) -> logits (N, classes, H4, W4)``."""

    def __init__(self, in_channels: int, low_level_channels: int, num_classes: int, rates: Sequence[int],
                 separable: bool = True) -> None:
        super().__init__()
        self.project = _conv_bn_relu(nn.Conv2d(low_level_channels, LOW_LEVEL_PROJ_CHANNELS, 1, bias=False),
                                     LOW_LEVEL_PROJ_CHANNELS)
        self.aspp = ASPP(in_channels, rates, separable)
        self.classifier = nn.Sequential(
            _conv3x3(LOW_LEVEL_PROJ_CHANNELS + ASPP_CHANNELS, ASPP_CHANNELS, 1, separable),
            nn.BatchNorm2d(ASPP_CHANNELS), nn.ReLU(inplace=True),
            nn.Conv2d(ASPP_CHANNELS, num_classes, 1))
        # VainF initialises the head with Kaiming-normal (fan-in) convs and unit BatchNorm.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        low = self.project(low)
        high = F.interpolate(self.aspp(high), size=low.shape[-2:], mode="bilinear", align_corners=False)
        return self.classifier(torch.cat([low, high], dim=1))


class MobileNetV2Backbone(nn.Module):
    """MobileNetV2 split into ``low_level_features`` (features[0:4]) and ``high_level_features`` (features[4:18]).

    ``(N, 3, H, W) -> (low (N, 24, ~H/4, ~W/4), high (N, 320, ~H/os, ~W/os))`` at width 1.0.
    Both keep MobileNetV2's indices as child names (``high_level_features.4`` ... ``.17``), as
    VainF's slice of ``features`` does; positional indexing (``high_level_features[0]``) still
    counts from 0.
    """

    def __init__(self, net: MobileNetV2) -> None:
        super().__init__()
        feats = list(net.features.children())
        self.low_level_features = nn.Sequential(*feats[:LOW_LEVEL_END])
        self.high_level_features = nn.Sequential(OrderedDict(
            (str(i), feats[i]) for i in range(LOW_LEVEL_END, len(feats) - 1)))
        self.low_level_channels = net.stage_channels[LOW_LEVEL_END - 1]
        self.high_level_channels = net.stage_channels[-2]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        low = self.low_level_features(x)
        return low, self.high_level_features(low)


def backbone_state_from_mobilenetv2(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a torchvision MobileNetV2 state dict to :class:`MobileNetV2Backbone` names.

    ``features.{i}.*`` -> ``low_level_features.{i}.*`` (i < 4) or ``high_level_features.{i}.*``;
    the last 1x1 conv (``features.18``) and the classifier have no counterpart and are dropped.
    """
    indices = {int(k.split(".")[1]) for k in state if k.startswith("features.")}
    if not indices:
        raise ValueError("not a MobileNetV2 state dict: no 'features.<i>.*' keys "
                         f"(keys look like {next(iter(state), None)!r})")
    last = max(indices)  # the final 1280-channel conv
    out = {}
    for key, value in state.items():
        if not key.startswith("features."):
            continue
        _, idx, rest = key.split(".", 2)
        i = int(idx)
        if i == last:
            continue
        part = "low_level_features" if i < LOW_LEVEL_END else "high_level_features"
        out[f"{part}.{i}.{rest}"] = value
    return out


class DeepLabV3Plus(nn.Module):
    """DeepLabV3+: ``(N, 3, H, W) -> logits (N, num_classes, H, W)``."""

    def __init__(self, backbone: MobileNetV2Backbone, classifier: DeepLabHeadV3Plus) -> None:
        super().__init__()
        self.backbone = backbone
        self.classifier = classifier

    #: Convs the paper keeps in full precision: the stem conv and the last classifier conv.
    PAPER_KEEP_FP: tuple[str, ...] = ("backbone.low_level_features.0.0", "classifier.classifier.3")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"DeepLabV3Plus expects an (N, 3, H, W) image batch, got shape {tuple(x.shape)}")
        low, high = self.backbone(x)
        return F.interpolate(self.classifier(low, high), size=x.shape[-2:], mode="bilinear", align_corners=False)

    def load_pretrained_backbone(self, path: str | os.PathLike) -> "DeepLabV3Plus":
        """Load ImageNet MobileNetV2 weights (torchvision layout, local file) into the backbone."""
        state = backbone_state_from_mobilenetv2(load_state_dict_file(path))
        load_into(self.backbone, state, strict=True, source=str(path))
        return self

    def load_checkpoint(self, path: str | os.PathLike) -> "DeepLabV3Plus":
        """Load a whole-model checkpoint strictly: a VainF file (``{"model_state": ...}``), a bare
        state dict, or a wcc-bench FP32 checkpoint (``{"model": ...}``), read with ``weights_only``.

        Raises FileNotFoundError for a missing file, and a ValueError naming the file and the
        first mismatching keys when it does not fit this network (e.g. another ``num_classes``).
        """
        load_into(self, load_state_dict_file(path), strict=True, source=str(path))
        return self


def deeplabv3plus_mobilenetv2(
    num_classes: int = 19,
    output_stride: int = 16,
    separable: bool = True,
    pretrained_backbone: str | os.PathLike | None = None,
    width_mult: float = 1.0,
    padding: Padding = "vainf",
    checkpoint: str | os.PathLike | None = None,
) -> DeepLabV3Plus:
    """DeepLabV3+ MobileNetV2 as in VainF's ``deeplabv3plus_mobilenet`` (``--separable_conv``).

    Args:
        num_classes: segmentation classes (19 for Cityscapes).
        output_stride: 16 (ASPP rates 6/12/18) or 8 (rates 12/24/36).
        separable: depthwise-separable 3x3 convs in the head (the paper's setting).
        pretrained_backbone: local path of a torchvision MobileNetV2 ImageNet state dict.
        width_mult: backbone width (1.0 in the paper).
        padding: backbone padding scheme, ``"vainf"`` (the paper's code) or ``"torchvision"``.
        checkpoint: local path of a whole-model checkpoint (VainF's files or a bare state dict),
            loaded strictly after ``pretrained_backbone`` (see :meth:`DeepLabV3Plus.load_checkpoint`).
    """
    if output_stride not in (8, 16):
        raise ValueError(f"output_stride must be 8 or 16, got {output_stride}")
    rates = (12, 24, 36) if output_stride == 8 else (6, 12, 18)
    net = MobileNetV2(width_mult=width_mult, output_stride=output_stride, padding=padding)
    backbone = MobileNetV2Backbone(net)
    head = DeepLabHeadV3Plus(backbone.high_level_channels, backbone.low_level_channels, num_classes, rates, separable)
    model = DeepLabV3Plus(backbone, head)
    if pretrained_backbone is not None:
        model.load_pretrained_backbone(pretrained_backbone)
    if checkpoint is not None:
        model.load_checkpoint(checkpoint)
    return model
