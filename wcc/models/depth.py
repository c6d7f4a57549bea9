"""Monocular depth network for KITTI: MobileNetV2 encoder + light, 1x1-heavy U-Net decoder.

The paper's depth network is not published; its KITTI BOPs (FP32 1,163.6 B = MACs x 32 x 32)
imply about 1.14 G MACs at 192x640, far below a ResNet-18 monodepth2. This network is built to
that budget and to the property WCC needs, most of its MACs in 1x1 convolutions:

* encoder: MobileNetV2 ``features[0:18]`` (torchvision names under ``encoder.features``, so
  ImageNet weights load; the 1280-channel 1x1 conv and the classifier are dropped), skips at
  strides 2, 4, 8, 16 and 32 (16, 24, 32, 96, 320 channels at width 1.0).
* decoder, monodepth2-style, five stages from stride 32 up to stride 1. Each stage: a 1x1
  reduction at the coarse resolution, nearest upsampling, concatenation with the skip, then a
  1x1 fusion, a depthwise 3x3 and a 1x1 (each with BatchNorm and ReLU6). The 3x3 convs of
  monodepth2's decoder are thus replaced by depthwise 3x3 plus 1x1 pairs.
* prediction: a 3x3 conv to one channel at full resolution, sigmoid disparity mapped to depth
  in ``[min_depth, max_depth]`` (monodepth2's ``disp_to_depth``, 0.1 to 100 m by default), so
  the output is always positive and bounded.

Dense MACs at width 1.0 (computed with :mod:`wcc.accounting`, ``tests/test_models.py`` checks
them): 1.132 G at 1x3x192x640 (encoder 0.684 G, decoder 0.447 G), 3.942 G at 1x3x352x1216,
against the ~1.14 G implied by the published BOPs. Census with :func:`paper_keep_fp` (stem
conv and the prediction conv FP, 44 M MACs together): 48 WCCConv2d, 22 QuantConv2d, 2 Conv2d;
the WCC layers hold 89% of the MACs.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from wcc.models.mobilenetv2 import ConvBNReLU, MobileNetV2, load_into, load_state_dict_file

__all__ = ["DepthNet", "MobileNetV2Encoder", "DepthDecoder", "depth_mobilenetv2", "disp_to_depth"]

# Index of the last block of each resolution in MobileNetV2.features (strides 2, 4, 8, 16, 32).
SKIP_INDICES: tuple[int, ...] = (1, 3, 6, 13, 17)
DECODER_CHANNELS: tuple[int, ...] = (16, 32, 64, 112, 224)


def disp_to_depth(disp: torch.Tensor, min_depth: float, max_depth: float) -> torch.Tensor:
    """Map a sigmoid output in [0, 1] to depth: ``1 / (1/max + (1/min - 1/max) * disp)``, same shape."""
    min_disp, max_disp = 1.0 / max_depth, 1.0 / min_depth
    return 1.0 / (min_disp + (max_disp - min_disp) * disp)


class MobileNetV2Encoder(nn.Module):
    """MobileNetV2 ``features[0:18]``: ``(N, 3, H, W) ->`` five feature maps at strides 2..32."""

    def __init__(self, width_mult: float = 1.0) -> None:
        super().__init__()
        net = MobileNetV2(width_mult=width_mult)
        self.features = nn.Sequential(*list(net.features.children())[:-1])
        self.skip_channels = [net.stage_channels[i] for i in SKIP_INDICES]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for i, block in enumerate(self.features):
            x = block(x)
            if i in SKIP_INDICES:
                outs.append(x)
        return outs


class _DecoderStage(nn.Module):
    """``(x (N, C_in, h, w), skip (N, C_skip, H, W) or None, size (H, W)) -> (N, C_out, H, W)``."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int) -> None:
        super().__init__()
        self.reduce = ConvBNReLU(in_channels, out_channels, kernel_size=1)
        self.fuse = ConvBNReLU(out_channels + skip_channels, out_channels, kernel_size=1)
        self.dw = ConvBNReLU(out_channels, out_channels, groups=out_channels)
        self.pw = ConvBNReLU(out_channels, out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None, size: Sequence[int]) -> torch.Tensor:
        # Reduce before upsampling: the 1x1 then runs on 4x fewer pixels.
        x = F.interpolate(self.reduce(x), size=tuple(size), mode="nearest")
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
        return self.pw(self.dw(self.fuse(x)))


class DepthDecoder(nn.Module):
    """Five stages from the stride-32 features to full resolution, then a 3x3 prediction conv.

    ``(skips [s2, s4, s8, s16, s32], (H, W)) -> disparity logits (N, 1, H, W)``.
    """

    def __init__(self, skip_channels: Sequence[int], channels: Sequence[int] = DECODER_CHANNELS) -> None:
        super().__init__()
        if len(skip_channels) != 5 or len(channels) != 5:
            raise ValueError(f"need 5 skip and 5 decoder channel counts, got {list(skip_channels)}, {list(channels)}")
        stages = []
        in_ch = skip_channels[-1]
        for i in reversed(range(5)):
            # Stage i brings the map to stride 2**i; its skip is the encoder output at that
            # stride (none at full resolution).
            skip = skip_channels[i - 1] if i > 0 else 0
            stages.append(_DecoderStage(in_ch, skip, channels[i]))
            in_ch = channels[i]
        self.stages = nn.ModuleList(stages)
        self.pred = nn.Conv2d(in_ch, 1, 3, padding=1)

    def forward(self, skips: Sequence[torch.Tensor], size: Sequence[int]) -> torch.Tensor:
        x = skips[-1]
        targets = [s.shape[-2:] for s in reversed(skips[:-1])] + [torch.Size(size)]
        fused = list(reversed(skips[:-1])) + [None]
        for stage, skip, target in zip(self.stages, fused, targets):
            x = stage(x, skip, target)
        return self.pred(x)


class DepthNet(nn.Module):
    """``(N, 3, H, W) -> depth (N, 1, H, W)`` in metres, inside ``[min_depth, max_depth]``."""

    #: Convs the paper's setting keeps FP: the stem conv and the final prediction conv.
    PAPER_KEEP_FP: tuple[str, ...] = ("encoder.features.0.0", "decoder.pred")

    def __init__(self, width_mult: float = 1.0, decoder_channels: Sequence[int] = DECODER_CHANNELS,
                 min_depth: float = 0.1, max_depth: float = 100.0) -> None:
        super().__init__()
        if not 0 < min_depth < max_depth:
            raise ValueError(f"need 0 < min_depth < max_depth, got {min_depth}, {max_depth}")
        self.min_depth, self.max_depth = float(min_depth), float(max_depth)
        self.encoder = MobileNetV2Encoder(width_mult)
        self.decoder = DepthDecoder(self.encoder.skip_channels, decoder_channels)

    def disparity(self, x: torch.Tensor) -> torch.Tensor:
        """Sigmoid disparity in [0, 1], ``(N, 1, H, W)`` (monodepth2's ``disp`` output)."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"DepthNet expects an (N, 3, H, W) image batch, got shape {tuple(x.shape)}")
        return torch.sigmoid(self.decoder(self.encoder(x), x.shape[-2:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return disp_to_depth(self.disparity(x), self.min_depth, self.max_depth)

    def load_pretrained_encoder(self, path: str | os.PathLike) -> "DepthNet":
        """Load ImageNet MobileNetV2 weights (torchvision layout, local file) into the encoder."""
        state = load_state_dict_file(path)
        n = len(self.encoder.features)
        mapped = {k: v for k, v in state.items()
                  if k.startswith("features.") and int(k.split(".")[1]) < n}
        load_into(self.encoder, mapped, strict=True, source=str(path))
        return self

    def load_checkpoint(self, path: str | os.PathLike) -> "DepthNet":
        """Load a whole-model checkpoint strictly (``{"model_state": ...}``, ``{"model": ...}`` or a
        bare state dict, read with ``weights_only``); a ValueError names the file and the first
        mismatching key when it does not fit."""
        load_into(self, load_state_dict_file(path), strict=True, source=str(path))
        return self


def depth_mobilenetv2(
    width_mult: float = 1.0,
    min_depth: float = 0.1,
    max_depth: float = 100.0,
    pretrained_encoder: str | os.PathLike | None = None,
    decoder_channels: Sequence[int] = DECODER_CHANNELS,
    checkpoint: str | os.PathLike | None = None,
) -> DepthNet:
    """Build the KITTI depth network.

    ``pretrained_encoder`` is a local torchvision MobileNetV2 state dict (the encoder keeps its
    names, ``encoder.features.0`` ... ``.17``); ``checkpoint`` a whole-model file, loaded
    strictly after it (:meth:`DepthNet.load_checkpoint`).
    """
    model = DepthNet(width_mult, decoder_channels, min_depth, max_depth)
    if pretrained_encoder is not None:
        model.load_pretrained_encoder(pretrained_encoder)
    if checkpoint is not None:
        model.load_checkpoint(checkpoint)
    return model
