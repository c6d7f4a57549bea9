"""One 1x1 layer forward: dense conv vs WCC (J=3, 25% kept, 8/8) on each backend."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._common import TIMER, device, sync, wcc_layer

SHAPES = ["1x256x256@128x256", "1x320x1280@64x128", "1x144x24@256x512"]
OPS = ["dense", "wcc-reference", "wcc-cpu", "wcc-triton"]


def _parse(shape: str) -> tuple[int, int, int, int, int]:
    left, right = shape.split("@")
    n, c_in, c_out = (int(v) for v in left.split("x"))
    h, w = (int(v) for v in right.split("x"))
    return n, c_in, c_out, h, w


class LayerForward:
    """Forward time of one layer; a backend the commit or machine lacks is skipped."""

    params = (SHAPES, OPS)
    param_names = ["shape", "op"]
    number = 1
    timer = TIMER
    repeat = (5, 15, 20.0)
    warmup_time = 0.2
    timeout = 300

    def setup(self, shape: str, op: str) -> None:
        torch.manual_seed(0)
        n, c_in, c_out, h, w = _parse(shape)
        self.dev = device()
        dtype = torch.float32 if self.dev.type == "cpu" else torch.float16
        conv = nn.Conv2d(c_in, c_out, 1).to(self.dev, dtype)
        self.x = torch.randn(n, c_in, h, w, device=self.dev, dtype=dtype)
        if op == "dense":
            self.fn = lambda: F.conv2d(self.x, conv.weight, conv.bias)
        else:
            layer = wcc_layer(conv, op.split("-", 1)[1], 0.25, self.x)
            self.fn = lambda: layer(self.x)
        with torch.no_grad():
            self.fn()  # first call: lazy initialisation, kernel builds
        sync(self.dev)

    def time_forward(self, shape: str, op: str) -> None:
        with torch.no_grad():
            self.fn()
        sync(self.dev)
