"""Models of the paper's experiments, in plain PyTorch (no torchvision needed).

* :func:`mobilenet_v2` - ImageNet MobileNetV2 with torchvision's parameter names
  (``load_pretrained(path)`` reads a local state-dict file).
* :func:`deeplabv3plus_mobilenetv2` - DeepLabV3+ as in VainF/DeepLabV3Plus-Pytorch with the
  separable head (Cityscapes table).
* :func:`depth_mobilenetv2` - the KITTI depth network (MobileNetV2 encoder, 1x1-heavy decoder).

:func:`paper_keep_fp` names the convs the paper keeps in full precision, for ``wcc.convert``::

    model = wcc.models.deeplabv3plus_mobilenetv2()
    wcc.convert(model, wcc.WCCConfig(keep_ratio=0.25), keep_fp=wcc.models.paper_keep_fp(model))
    # -> 41 WCCConv2d, 21 QuantConv2d, 2 Conv2d
"""

from __future__ import annotations

import os

from torch import nn

from wcc.models.deeplab import DeepLabV3Plus, deeplabv3plus_mobilenetv2
from wcc.models.depth import DepthNet, depth_mobilenetv2, disp_to_depth
from wcc.models.mobilenetv2 import MobileNetV2, load_state_dict_file, mobilenet_v2

__all__ = [
    "MobileNetV2",
    "mobilenet_v2",
    "DeepLabV3Plus",
    "deeplabv3plus_mobilenetv2",
    "DepthNet",
    "depth_mobilenetv2",
    "disp_to_depth",
    "load_state_dict_file",
    "paper_keep_fp",
    "load_pretrained_backbone",
]

# MobileNetV2 alone: the stem conv (its classifier is a Linear layer, which convert never touches).
_MOBILENET_KEEP_FP: tuple[str, ...] = ("features.0.0",)


def paper_keep_fp(model: nn.Module) -> list[str]:
    """Qualified names of the convs the paper keeps FP (the first conv and the last prediction conv).

    Works for the models of this package; pass the result as ``keep_fp`` to ``wcc.convert``.
    """
    if isinstance(model, (DeepLabV3Plus, DepthNet)):
        return list(model.PAPER_KEEP_FP)
    if isinstance(model, MobileNetV2):
        return list(_MOBILENET_KEEP_FP)
    raise TypeError(
        f"paper_keep_fp knows the models of wcc.models, not {type(model).__name__}; "
        f"pass the names of your first and last convs to wcc.convert(keep_fp=...) directly")


def load_pretrained_backbone(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load ImageNet MobileNetV2 weights (torchvision layout, local file) into the part of ``model``
    that is a MobileNetV2: DeepLabV3+'s backbone, the depth net's encoder, or MobileNetV2 itself."""
    if isinstance(model, DeepLabV3Plus):
        return model.load_pretrained_backbone(path)
    if isinstance(model, DepthNet):
        return model.load_pretrained_encoder(path)
    if isinstance(model, MobileNetV2):
        return model.load_pretrained(path)
    raise TypeError(f"load_pretrained_backbone knows the models of wcc.models, not {type(model).__name__}")
