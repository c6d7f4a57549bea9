"""DeepLabV3+-MobileNetV2 inference forward: FP32, 8/8 and WCC 25% (backend "auto")."""

from __future__ import annotations

import torch

from ._common import TIMER, device, require, sync

VARIANTS = ["FP32", "8/8", "WCC 25%"]


class ModelForward:
    params = VARIANTS
    param_names = ["variant"]
    number = 1
    timer = TIMER
    repeat = (3, 10, 30.0)
    warmup_time = 0.0
    timeout = 600

    def setup(self, variant: str) -> None:
        models = require("wcc.models", "wcc.models")
        from wcc.config import QuantConfig, WCCConfig
        from wcc.convert import convert

        self.dev = device()
        # Coarse and CPU-friendly; a CUDA run uses the paper's resolution.
        size = (128, 256) if self.dev.type == "cpu" else (1024, 2048)
        torch.manual_seed(0)
        model = models.deeplabv3plus_mobilenetv2()
        keep_fp = models.paper_keep_fp(model)
        if variant == "8/8":
            convert(model, QuantConfig(8, 8), keep_fp=keep_fp)
        elif variant.startswith("WCC"):
            convert(model, WCCConfig(levels=3, keep_ratio=0.25), keep_fp=keep_fp)
        dtype = torch.float32 if self.dev.type == "cpu" else torch.float16
        self.model = model.to(self.dev, dtype).eval()
        self.x = torch.randn(1, 3, *size, device=self.dev, dtype=dtype)
        with torch.no_grad():
            self.model(self.x)
        sync(self.dev)

    def time_forward(self, variant: str) -> None:
        with torch.no_grad():
            self.model(self.x)
        sync(self.dev)
