"""Accuracy as errors (lower is better, docs/design.md §7) on a tiny fixed synthetic eval.

The eval needs no training and no download: 8 SynthStreets scenes (128x256, seed 0) fit a
per-pixel linear classifier in closed form (ridge regression on fixed features: seeded random
conv features of the image, its colours, a positional encoding and a constant), and 4 other
scenes evaluate it. The classifier is a 1x1 conv, the layer WCC replaces; each variant swaps
it for the compressed layer with float weights (the activations are what WCC compresses):

* ``FP32``: the fitted conv; ``A8``: QuantConv2d, 8-bit activations;
* ``WCC <r>%``: WCCConv2d, J = 3, keep ratio r, 8-bit kept coefficients.

Tracked: ``100 - mIoU`` (%) against the ground truth, and the relative L2 error (%) of the
logits against FP32's. Absolute numbers are those of a weak linear model; what matters is
that they move when the method changes.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ._common import require, set_threads

VARIANTS = ["FP32", "A8", "WCC 50%", "WCC 25%", "WCC 12.5%"]
_SIZE = (128, 256)
_FIT, _EVAL = range(0, 8), range(8, 12)
_CHANNELS = 48


def _scenes(indices: range) -> tuple[torch.Tensor, torch.Tensor]:
    synthetic = require("wcc.data.synthetic", "SynthStreets generator")
    cityscapes = require("wcc.data.cityscapes", "Cityscapes label tables")
    images, labels = [], []
    for i in indices:
        image, label_ids, _ = synthetic.render(i, seed=0, size=_SIZE)
        images.append(image)
        labels.append(cityscapes.label_ids_to_train_ids(label_ids))
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255
    return x, torch.from_numpy(np.stack(labels)).long()


class _Features(nn.Module):
    """Fixed (seeded, untrained) features: two random convs + ReLU, RGB, positions, a constant."""

    pos: torch.Tensor  # (1, 12, H, W) positional encoding (a buffer)

    def __init__(self) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.c1 = nn.Conv2d(3, _CHANNELS, 5, padding=2)
        self.c2 = nn.Conv2d(_CHANNELS, _CHANNELS, 3, padding=2, dilation=2)
        with torch.no_grad():
            for conv in (self.c1, self.c2):
                assert conv.bias is not None
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen) * conv.weight[0].numel() ** -0.5)
                conv.bias.copy_(torch.randn(conv.bias.shape, generator=gen) * 0.5)
        h, w = _SIZE
        ys = torch.linspace(0, 1, h).view(1, 1, h, 1).expand(1, 1, h, w)
        xs = torch.linspace(0, 1, w).view(1, 1, 1, w).expand(1, 1, h, w)
        self.register_buffer("pos", torch.cat([torch.cos(math.pi * k * ys) for k in range(1, 9)]
                                              + [torch.cos(math.pi * k * xs) for k in range(1, 5)], 1))

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.c2(torch.relu(self.c1(x - 0.5))))
        n = x.shape[0]
        return torch.cat([h, x, self.pos.expand(n, -1, -1, -1), torch.ones_like(h[:, :1])], 1)


class SynthSegErrors:
    """Errors of the compressed classifier on the fixed synthetic eval (see module docstring)."""

    params = VARIANTS
    param_names = ["variant"]
    unit = "%"
    timeout = 600

    def setup_cache(self) -> dict[str, torch.Tensor] | None:
        # asv reports an exception here as a failure, not a skip: return None and let setup skip.
        try:
            return self._fit()
        except NotImplementedError:
            return None

    def _fit(self) -> dict[str, torch.Tensor]:
        set_threads()  # the features are then computed the same way every time
        feats = _Features()
        x_fit, y_fit = _scenes(_FIT)
        f_fit = feats(x_fit)
        valid = y_fit != 255
        a = f_fit.permute(0, 2, 3, 1)[valid].double()
        b = nn.functional.one_hot(y_fit[valid], 19).double()
        # Ridge regression in closed form, in float64 so the fit is reproducible.
        w = torch.linalg.solve(a.T @ a + 1e-2 * torch.eye(a.shape[1], dtype=torch.float64), a.T @ b)
        x_eval, y_eval = _scenes(_EVAL)
        return {"weight": w.T.float().contiguous(), "features": feats(x_eval), "target": y_eval}

    def setup(self, cache: dict[str, torch.Tensor] | None, variant: str) -> None:
        if cache is None:
            raise NotImplementedError("this commit has no SynthStreets generator or Cityscapes label tables")
        metrics = require("wcc.metrics", "wcc.metrics")
        set_threads()
        from wcc.config import WCCConfig
        from wcc.layers import QuantConv2d, WCCConv2d

        weight = cache["weight"]
        conv = nn.Conv2d(weight.shape[1], weight.shape[0], 1, bias=False)
        with torch.no_grad():
            conv.weight.copy_(weight.view(*weight.shape, 1, 1))
        layer: nn.Module
        if variant == "A8":
            layer = QuantConv2d.from_conv2d(conv, weight_bits=None, act_bits=8)
        elif variant.startswith("WCC"):
            keep = float(variant.split()[1].rstrip("%")) / 100
            layer = WCCConv2d.from_conv2d(conv, WCCConfig(levels=3, keep_ratio=keep, weight_bits=None, act_bits=8))
        else:
            layer = conv
        with torch.no_grad():
            self.reference = conv(cache["features"])
            self.logits = layer(cache["features"])
        metric = metrics.SegmentationMetric()
        metric.update(self.logits, cache["target"])
        self.miou = metric.compute()["miou"]

    def track_miou_error(self, cache: dict[str, torch.Tensor], variant: str) -> float:
        return 100.0 * (1.0 - self.miou)

    def track_logit_error(self, cache: dict[str, torch.Tensor], variant: str) -> float:
        return 100.0 * float((self.logits - self.reference).norm() / self.reference.norm())
